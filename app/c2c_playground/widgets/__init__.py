"""The app's widgets: panes, set-up panels, charts, the token diff and the error banner."""
