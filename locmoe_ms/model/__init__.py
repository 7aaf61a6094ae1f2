"""PanGu-Sigma-style sparse transformer built from nn.Cells."""
