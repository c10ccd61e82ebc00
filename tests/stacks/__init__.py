"""Second traced stacks: older library releases layered on the main environment (issue 8)."""
