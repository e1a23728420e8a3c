"""The ready optimizers built as presets update exactly as the hand-written functions did.

`trust_region`, `normalized_sgdm`, `signum`, `auon` and `hybrid_auon` are presets of one
builder, and `muon` / `turbo_muon` of another. The expected updates below were recorded from
the hand-written functions (one signature and docstring per optimizer) before they became
presets: the third update of a 4×6 hidden kernel and a bias, float32, default fallback. The
presets must reproduce them to float32 round-off and keep the state layout that checkpoints
hold (the same leaf paths).
"""

import jax.numpy as jnp
import numpy as np
import pytest

import optorth
from optorth.matrices._paths import flatten_with_paths

CASES = {
    "auon": lambda: optorth.auon(),
    "auon_args": lambda: optorth.auon(0.1, 0.9, nesterov=False, weight_decay=0.1),
    "hybrid_auon": lambda: optorth.hybrid_auon(),
    "normalized_sgdm": lambda: optorth.normalized_sgdm(),
    "normalized_sgdm_args": lambda: optorth.normalized_sgdm(0.2, 0.5, nesterov=True),
    "signum": lambda: optorth.signum(),
    "trust_region": lambda: optorth.trust_region(),
    "trust_region_args": lambda: optorth.trust_region(
        0.05, norm="frobenius", beta=0.8, warm_start=False, adaptive=True, weight_decay=0.1),
    "turbo_muon": lambda: optorth.turbo_muon(),
    "turbo_muon_args": lambda: optorth.turbo_muon(0.05, 0.9, nesterov=False,
                                                 bias_correction=True),
}

#: name -> (hidden/kernel updates, bias updates), third step, recorded before the presets.
EXPECTED = {
    "auon": (
        [  # hidden/kernel (4×6), flattened
            0.0, -0.0058057783, -0.0007439303, 0.004676812, -0.0029150066, 0.009714122,
            -0.016052525, 0.008852699, -0.0036977988, 0.008358218, -0.007534706, 0.004507362,
            -0.012184371, 0.016662562, -0.008160348, 0.0038009302, -0.005858199, 0.00024109849,
            0.003736863, 0.0042260755, -0.0068989974, -0.0011442673, 0.0030916152, -0.002534256,
        ],
        [  # bias (6,)
            -0.0029999996, 0.0006418575, 0.00015926476, 0.00089556753, 0.0002623199, 0.0010806038,
        ],
    ),
    "auon_args": (
        [  # hidden/kernel (4×6), flattened
            -0.0025000002, -0.03197842, 0.0049514505, 0.0141693475, -0.00019038729, 0.030665902,
            -0.06091171, 0.021326935, 0.002905185, 0.019833824, -0.011599711, 0.0008453917,
            -0.03987092, 0.057721045, -0.022677884, 0.0054655196, -0.012241716, -0.007958735,
            0.021801112, 0.014615633, -0.034224715, 0.0008192299, 0.009609127, -0.0012543176,
        ],
        [  # bias (6,)
            -0.0029999996, 0.0006418575, 0.00015926476, 0.00089556753, 0.0002623199, 0.0010806038,
        ],
    ),
    "hybrid_auon": (
        [  # hidden/kernel (4×6), flattened
            0.0009665749, -0.0090592895, -0.0026023847, 0.007653286, -0.0046039335, 0.016531678,
            -0.012757382, 0.0015590831, 5.44726e-05, 0.007895447, -0.005431156, 0.00446918,
            -0.004966532, 0.013944597, -0.0070957122, -0.00020880447, -0.0029819403, -0.001387763,
            0.007070593, 0.0062913992, -0.012678702, -0.0013055986, 0.0055509587, -0.003317276,
        ],
        [  # bias (6,)
            -0.0029999996, 0.0006418575, 0.00015926476, 0.00089556753, 0.0002623199, 0.0010806038,
        ],
    ),
    "normalized_sgdm": (
        [  # hidden/kernel (4×6), flattened
            0.0, -0.007664767, 0.0009787733, 0.0029265892, -0.00045659175, 0.007851807,
            -0.014642819, 0.005808872, 0.0006360102, 0.0043934993, -0.0034278585, 0.00021433352,
            -0.009450001, 0.015012792, -0.0055897357, 0.000892489, -0.0036627175, -0.0021638775,
            0.0058689876, 0.004276228, -0.00830964, -0.00013766432, 0.0017791286, -0.000647263,
        ],
        [  # bias (6,)
            -0.0029999996, 0.0006418575, 0.00015926476, 0.00089556753, 0.0002623199, 0.0010806038,
        ],
    ),
    "normalized_sgdm_args": (
        [  # hidden/kernel (4×6), flattened
            0.0, -0.0028846597, -0.0116337715, 0.025772726, -0.034220524, 0.051722903,
            -0.06492828, 0.057420593, -0.050066363, 0.0549889, -0.055056363, 0.053912707,
            -0.06522925, 0.06940679, -0.053292077, 0.038977977, -0.03186797, 0.01715655,
            -0.007115549, 0.01310955, -0.011535768, -0.0060975975, 0.019007524, -0.029484853,
        ],
        [  # bias (6,)
            -0.0029999996, 0.0006418575, 0.00015926476, 0.00089556753, 0.0002623199, 0.0010806038,
        ],
    ),
    "signum": (
        [  # hidden/kernel (4×6), flattened
            0.0, -0.00025, 0.00025, 0.00025, -0.00025, 0.00025,
            -0.00025, 0.00025, 0.00025, 0.00025, -0.00025, 0.00025,
            -0.00025, 0.00025, -0.00025, 0.00025, -0.00025, -0.00025,
            0.00025, 0.00025, -0.00025, -0.00025, 0.00025, -0.00025,
        ],
        [  # bias (6,)
            -0.0029999996, 0.0006418575, 0.00015926476, 0.00089556753, 0.0002623199, 0.0010806038,
        ],
    ),
    "trust_region": (
        [  # hidden/kernel (4×6), flattened
            -0.0085535, -0.008769245, -0.01086418, 0.012952416, 0.007245656, 0.008456064,
            -0.015700458, 0.006403236, -0.0015471514, 0.010971139, -0.002260259, -0.013453293,
            -0.009996562, 0.012568409, 0.0019268852, -0.0014994005, -0.012640602, 0.010708866,
            0.0041807247, 0.013401128, -0.01836796, -0.0037662487, 0.0052179676, 0.0063956617,
        ],
        [  # bias (6,)
            -0.0029999996, 0.0006418575, 0.00015926476, 0.00089556753, 0.0002623199, 0.0010806038,
        ],
    ),
    "trust_region_args": (
        [  # hidden/kernel (4×6), flattened
            -0.0012500001, -0.011230334, 0.0020550895, 0.0055870344, -0.0012326895, 0.012390124,
            -0.023277191, 0.009023837, -0.0005863616, 0.008221257, -0.004869584, 0.002200271,
            -0.016199583, 0.021630427, -0.009928868, 0.0035431043, -0.004189695, -0.002507918,
            0.0068735587, 0.004991243, -0.012339271, 0.0009356133, 0.0040376713, -0.0016384069,
        ],
        [  # bias (6,)
            -0.0029999996, 0.0006418575, 0.00015926476, 0.00089556753, 0.0002623199, 0.0010806038,
        ],
    ),
    "turbo_muon": (
        [  # hidden/kernel (4×6), flattened
            0.0038276978, -0.008213741, -0.005120048, 0.0073142443, -0.005654018, 0.020333612,
            -0.019028949, 2.5292335e-05, -0.0055817054, 0.014600486, 0.00046643938, -0.0026841178,
            -0.003701406, 0.019957256, -0.0033590805, -0.0048732255, -0.011197998, 0.0064029233,
            0.008261418, 0.005223347, -0.019843986, 0.002207523, 0.009380967, -0.0039343764,
        ],
        [  # bias (6,)
            -0.0029999996, 0.0006418575, 0.00015926476, 0.00089556753, 0.0002623199, 0.0010806038,
        ],
    ),
    "turbo_muon_args": (
        [  # hidden/kernel (4×6), flattened
            -0.0012803178, -0.024218513, -0.0074769305, 0.015021508, -0.009397038, 0.05361263,
            -0.04935148, 0.00095306954, -0.010685938, 0.032857742, 0.0050675995, -0.011290147,
            -0.013875975, 0.04842299, -0.0074541136, -0.013818763, -0.025471574, 0.020291941,
            0.021298874, 0.011007807, -0.051742215, 0.015097027, 0.015374509, -0.0014918504,
        ],
        [  # bias (6,)
            -0.0029999996, 0.0006418575, 0.00015926476, 0.00089556753, 0.0002623199, 0.0010806038,
        ],
    ),
}

#: The leaves of the state (the layout a checkpoint holds), recorded before the presets.
PREFIX = "inner_states/train/inner_state/inner_states/"
COMMON = ["fallback/inner_state/0/count", "fallback/inner_state/0/mu/bias",
          "fallback/inner_state/0/nu/bias", "matrix/inner_state/0/count",
          "matrix/inner_state/0/mu/hidden/kernel"]
NEWTON_SCHULZ = ["matrix/inner_state/1/coeffs", "matrix/inner_state/1/fingerprint",
                 "matrix/inner_state/1/version"]
WITH_NEWTON_SCHULZ = ("trust_region", "turbo_muon", "turbo_muon_args")


def _params():
    kernel = np.cos(np.arange(24.0)).reshape(4, 6) / 4
    return {"hidden": {"kernel": jnp.asarray(kernel, jnp.float32)},
            "bias": jnp.asarray(np.linspace(-0.5, 0.5, 6), jnp.float32)}


def _grads(step):
    kernel = np.sin(np.arange(24.0) * (step + 1.3)).reshape(4, 6)
    return {"hidden": {"kernel": jnp.asarray(kernel, jnp.float32)},
            "bias": jnp.asarray(np.cos(np.arange(6.0) * (step + 0.7)), jnp.float32)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_preset_updates_match_the_hand_written_functions(case):
    tx, params = CASES[case](), _params()
    state = tx.init(params)
    for step in range(3):
        updates, state = tx.update(_grads(step), state, params)
    kernel, bias = EXPECTED[case]
    np.testing.assert_allclose(updates["hidden"]["kernel"], np.reshape(kernel, (4, 6)),
                               rtol=2e-6, atol=1e-9)
    np.testing.assert_allclose(updates["bias"], bias, rtol=2e-6, atol=1e-9)
    paths = [path for path, _ in flatten_with_paths(state)[0]]
    layout = COMMON + (NEWTON_SCHULZ if case in WITH_NEWTON_SCHULZ else [])
    assert paths == [PREFIX + leaf for leaf in layout]
