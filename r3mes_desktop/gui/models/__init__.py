"""What the window shows, kept as data: Qt models and the rows and numbers behind them."""
