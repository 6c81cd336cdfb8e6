"""One module per edge concern, as plain decisions; ``gatehouse.edge`` calls them in order."""
