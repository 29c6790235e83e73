"""Tools that look at a net or a run: time, draw, plot, and the loss landscape."""
