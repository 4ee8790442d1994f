"""The width of an entity embedding (tables, users and items)."""


def embedding_size(num_categories: int) -> int:
    """fastai's rule of thumb for the width of a column's embedding: min(600, round(1.6 * n ** 0.56)), n the
    number of rows of the embedding (the categories plus the unknown index)."""
    return min(600, round(1.6 * num_categories ** 0.56))
