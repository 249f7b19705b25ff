"""The tutorial model the deployment tests serve: built by glassnet.tutorial.build_model, trained briefly."""
import numpy as np

import glassnet
from glassnet.tutorial import build_model


def tutorial_model(path):
    (x, y), (xt, _) = glassnet.datasets.pima.load_data()
    glassnet.set_random_seed(3)
    model = build_model(x)
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    model.save(path)
    return model, xt[:16].astype(np.float32)
