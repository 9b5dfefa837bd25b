"""An iris classifier with scikit-learn and numpy, the packages of requirements.txt.

To stay small, the example trains on the iris data scikit-learn ships when it is imported
(a fraction of a second, and the same model every time); a real model would load its
fitted estimator from a file of the payload.
"""

import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

_features, _species = load_iris(return_X_y=True)
_model = LogisticRegression(max_iter=1000).fit(_features, _species)


def predict(features):
    """features: a [-1, 4] batch of measurements -> the species and its probability."""
    batch = np.asarray(features, dtype=np.float64).reshape(-1, 4)
    probabilities = _model.predict_proba(batch)
    species = probabilities.argmax(axis=1)
    return {
        "species": species.tolist(),
        "probability": probabilities[np.arange(len(batch)), species].round(6).tolist(),
    }


if __name__ == "__main__":
    print(predict([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]))
