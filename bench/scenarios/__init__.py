"""One module per scenario of issue 8; each returns result rows."""
