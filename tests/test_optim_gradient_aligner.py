"""Gradient aligner: exact projection on hand-built vectors, observe-only warmup, statistics."""

import jax.numpy as jnp
import numpy as np
import pytest

from muse_jax.optim.gradient_aligner import gradient_aligner

GRADS = {"a": jnp.array([-1.0, 1.0]), "b": jnp.array([1.0, 0.0])}
REFERENCE = {"a": jnp.array([1.0, 0.0]), "b": jnp.array([1.0, 1.0])}  # a opposes (cos −1/√2), b aligns


def aligned(tx, grads=GRADS, reference=REFERENCE):
    state = tx.init(grads)._replace(reference=reference)
    return tx.update(grads, state)


def test_removes_strength_times_the_opposing_projection():
    out, state = aligned(gradient_aligner(min_alignment=0.0, strength=0.5, warmup=0, reference_decay=0.9))
    np.testing.assert_allclose(out["a"], [-0.5, 1.0])  # g − 0.5 · (⟨g,r⟩/‖r‖²) r = g + 0.5 r
    np.testing.assert_allclose(out["b"], [1.0, 0.0])
    assert float(state.opposite_fraction) == pytest.approx(0.5)
    assert float(state.energy_removed) == pytest.approx((3.0 - 2.25) / 3.0)
    np.testing.assert_allclose(state.reference["a"], [0.8, 0.1])  # 0.9 r + 0.1 g (the raw g)


def test_full_strength_leaves_a_gradient_orthogonal_to_the_reference():
    out, state = aligned(gradient_aligner(strength=1.0))
    assert float(jnp.vdot(out["a"], REFERENCE["a"])) == pytest.approx(0.0)
    assert float(state.energy_removed) == pytest.approx(1.0 / 3.0)


def test_warmup_observes_without_changing_the_gradient():
    tx = gradient_aligner(strength=1.0, warmup=1)
    out, state = aligned(tx)
    np.testing.assert_array_equal(out["a"], GRADS["a"])
    assert float(state.opposite_fraction) == pytest.approx(0.5) and float(state.energy_removed) == 0.0
    out, _ = tx.update(GRADS, state._replace(reference=REFERENCE))  # second update: active
    np.testing.assert_allclose(out["a"], [0.0, 1.0])


def test_min_alignment_sets_how_opposed_a_leaf_must_be():
    out, state = aligned(gradient_aligner(min_alignment=-0.8))  # cos −0.707 is not below −0.8
    np.testing.assert_array_equal(out["a"], GRADS["a"])
    assert float(state.opposite_fraction) == 0.0


def test_zero_reference_changes_nothing():
    out, state = gradient_aligner().update(GRADS, gradient_aligner().init(GRADS))
    np.testing.assert_array_equal(out["a"], GRADS["a"])
    assert float(state.opposite_fraction) == 0.0


def test_rejects_a_positive_min_alignment():
    with pytest.raises(ValueError, match="min_alignment"):
        gradient_aligner(min_alignment=0.5)
