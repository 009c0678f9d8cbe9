"""The training engine: Lightning glue shared by pre-training and downstream recipes."""
