"""The window's parts: panels, charts, dialogs, tray; each built from models and the port."""
