"""Our models' train steps on random data, as scripts/bench.py times them and scripts/predict_costs.py analyses
them (no flags here, so both can import it)."""


def jax_parts(name: str, batch: int, mixed_precision: bool = False):
    """(train_step, state, batch, rng) of one of our models on random data: what `jax_step` times and
    scripts/predict_costs.py analyses. `mixed_precision`: bfloat16 compute for the image models (float32
    weights, BatchNorm statistics and loss); the others have no such option and stay float32."""
    import jax
    import jax.numpy as jnp
    import optax
    from research.core import steps
    from research.core.train_state import TrainState, create_train_state
    dtype = jnp.bfloat16 if mixed_precision else jnp.float32
    if name == "lesson1" or name.startswith("resnet"):
        from experiments import fashion_mnist
        from research.core import classification
        from research.vision import architectures
        if name == "lesson1":
            model, shape = architectures.small_resnet(fashion_mnist.get_config().model, 10, dtype), (batch, 28, 28, 1)
        else:
            arch, size = name.split("_")
            model, shape = architectures.imagenet_resnet(arch, 10, dtype=dtype), (batch, int(size), int(size), 3)
        batch_data = {"image": jax.random.normal(jax.random.key(1), shape),
                      "label": jax.random.randint(jax.random.key(2), (batch,), 0, 10)}
        state = create_train_state(model, optax.adamw(1e-3), jax.random.key(0), (1, *shape[1:]))
        train_step = classification.make_train_step(0.1)
    elif name == "unet":
        from experiments import segmentation as segmentation_experiment
        from research.vision import segmentation, segmenter, unet
        model = segmenter.make_model(segmentation_experiment.get_config(), 11)
        variables = unet.init_variables(model, jax.random.key(0), (1, 64, 64, 1))
        state = TrainState.create(apply_fn=model.apply, params=variables["params"],
                                  batch_stats=variables["batch_stats"], tx=optax.adamw(1e-3))
        batch_data = {"image": jax.random.normal(jax.random.key(1), (batch, 64, 64, 1)),
                      "pixel_labels": jax.random.randint(jax.random.key(2), (batch, 64, 64), 0, 11)}
        train_step = segmentation.make_train_step()
    elif name == "tabular":
        from research.tabular import task as tabular_task
        from research.tabular.model import TabularModel
        cardinalities = (47, 13, 3, 3)
        cat = jnp.stack([jax.random.randint(jax.random.key(k), (batch,), 0, n)
                         for k, n in enumerate(cardinalities)], 1)
        model = TabularModel(cardinalities=cardinalities, hidden=(1000, 500), y_range=(0.0, 12.0))
        batch_data = {"cat": cat, "cont": jax.random.normal(jax.random.key(9), (batch, 4)),
                      "target": jax.random.uniform(jax.random.key(8), (batch,), maxval=10.0)}
        variables = model.init(jax.random.key(0), cat[:1], batch_data["cont"][:1], train=False)
        state = TrainState.create(apply_fn=model.apply, params=variables["params"],
                                  batch_stats=variables["batch_stats"], tx=optax.adamw(1e-3))
        train_step = steps.make_train_step(tabular_task.task("regression", True))
    elif name == "collab":
        from research.collab import recipe
        from research.collab.model import DotProductBias
        model = DotProductBias(944, 1683, 50)
        batch_data = {"user": jax.random.randint(jax.random.key(1), (batch,), 0, 944),
                      "item": jax.random.randint(jax.random.key(2), (batch,), 0, 1683),
                      "target": jax.random.uniform(jax.random.key(3), (batch,), minval=1.0, maxval=5.0)}
        variables = model.init(jax.random.key(0), batch_data["user"][:1], batch_data["item"][:1])
        state = TrainState.create(apply_fn=model.apply, params=variables["params"], batch_stats={},
                                  tx=optax.adamw(1e-3))
        train_step = steps.make_train_step(recipe.TASK)
    elif name == "char_rnn":
        from scripts.benchmark_lstm import jax_parts as lstm_parts
        train_step, state, batch_data = lstm_parts(batch, 128, 256, 2, 100, 64)
    else:
        raise ValueError(name)
    return train_step, state, batch_data, jax.random.key(0)
