"""User code for the invalid specs of this folder: a loss function and a data function.

`beagle check` is run from this folder in the golden test, so `userlib:...` resolves here.
"""


def my_loss(predictions, targets):
    """A user loss (never called by the front end's tests)."""
    return ((predictions - targets) ** 2).mean()


def train_batches(batch_size):
    """A user data function (never called by the front end's tests)."""
    return iter(())
