"""Store backends and the registry that opens them by spec."""
