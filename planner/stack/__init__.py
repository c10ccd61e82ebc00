"""The modeled training stack: framework, library versions, their behaviours, and the optimizer table."""
