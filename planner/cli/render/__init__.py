"""All rich output lives in this package; the rest of loraplan returns data."""
