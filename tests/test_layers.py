"""SparseDense and the networks against the paper's equations (Eqs 2, 6, 7)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dendnorm_flax.layers import SparseDense
from dendnorm_flax.models import SparseConvNet, SparseMLP
from dendnorm_flax.train import cost


def _plain_forward(ws, bs, w_out, b_out, x, act=jax.nn.sigmoid):
    """The network of Eqs 1-3 written with explicit weight matrices w."""
    a = x
    for w, b in zip(ws, bs):
        a = act(a @ w + jnp.broadcast_to(b, (a.shape[0], b.shape[0])))
    return a @ w_out + jnp.broadcast_to(b_out, (a.shape[0], b_out.shape[0]))


def _random_net(shared_s, seed=0):
    net = SparseMLP(20, (7, 5), 3, eps=0.4, normalise=True, shared_s=shared_s, s_init=3.0,
                    rngs=nnx.Rngs(seed))
    # An empty neuron: hidden neuron 2 of the first layer receives no contact.
    first = net.hidden[0]
    first.set_mask(first.mask[...].at[:, 2].set(False), first.v[...])
    if not shared_s:
        net.hidden[1].s[...] = jnp.asarray(0.7)
    return net


@pytest.mark.parametrize("shared_s", [True, False])
def test_eq7_gradients_match_autodiff(shared_s):
    net = _random_net(shared_s)
    x = jax.random.uniform(jax.random.key(1), (6, 20))
    y = jnp.asarray([0, 1, 2, 2, 1, 0])
    graphdef, params, rest = nnx.split(net, nnx.Param, ...)

    def loss(p):
        return cost(nnx.merge(graphdef, p, rest)(x), y).mean()

    g = nnx.merge(graphdef, jax.grad(loss)(params), rest)  # gradients, arranged like the net

    # Gradient with respect to the effective weights w, at w = s v / n (Eq 6).
    ws = [layer.weights() for layer in net.hidden]
    bs = [layer.b[...] for layer in net.hidden]

    def loss_w(ws):
        return cost(_plain_forward(ws, bs, net.out.kernel[...], net.out.bias[...], x), y).mean()

    np.testing.assert_allclose(loss_w(ws), loss(params), rtol=1e-6)
    grad_w = jax.grad(loss_w)(ws)

    ds_expected = {}
    for layer, g_layer, gw in zip(net.hidden, g.hidden, grad_w):
        n = layer.n_aff[...].astype(jnp.float32)
        s = layer.s[...]
        safe_n = jnp.where(n > 0, n, 1.0)
        mask = layer.mask[...]
        # Eq 7, first part: grad_v = s / n_i * grad_w on the contacts.
        expected_v = jnp.where(mask, gw * jnp.broadcast_to(s / safe_n, gw.shape), 0.0)
        np.testing.assert_allclose(g_layer.v[...], expected_v, rtol=2e-5, atol=1e-7)
        # Eq 7, second part: dC/ds = sum_i v_i / n_i . grad_w_i (over every neuron sharing s).
        term = jnp.sum(jnp.where(mask, layer.v[...] * gw, 0.0), axis=0) / safe_n
        ds_expected[id(layer.s)] = ds_expected.get(id(layer.s), 0.0) + term.sum()
        # The empty neuron learns nothing and its weights are exactly zero, not NaN.
    assert float(net.hidden[0].n_aff[...][2]) == 0
    assert np.all(np.asarray(net.hidden[0].weights()[:, 2]) == 0)
    assert np.all(np.asarray(g.hidden[0].v[...][:, 2]) == 0)
    assert np.all(np.isfinite(np.asarray(g.hidden[0].v[...])))

    got = {id(layer.s): float(g_layer.s[...]) for layer, g_layer in zip(net.hidden, g.hidden)}
    assert len(got) == (1 if shared_s else 2)
    for key, value in ds_expected.items():
        np.testing.assert_allclose(got[key], float(value), rtol=2e-5, atol=1e-7)


def test_more_contacts_smaller_updates():
    """Eq 7: with equal grad_w, the raw-weight update shrinks as 1/n_i."""
    layer = SparseDense(50, 4, eps=0.5, normalise=True, s_init=2.0, rngs=nnx.Rngs(0))
    n = np.asarray(layer.n_aff[...])
    graphdef, params, rest = nnx.split(layer, nnx.Param, ...)
    x = jnp.ones((1, 50))
    g = jax.grad(lambda p: nnx.merge(graphdef, p, rest)(x).sum())(params)
    # d z_i / d v_ki = s / n_i for every contact with input 1.
    per_neuron = np.asarray(g["v"][...]).sum(axis=0) / n
    np.testing.assert_allclose(per_neuron, 2.0 / n, rtol=1e-6)


def _equal_in_degree_layer(normalise, s_init, k=6, n_in=30, n_out=5):
    layer = SparseDense(n_in, n_out, eps=0.2, normalise=normalise, s_init=s_init, rngs=nnx.Rngs(3))
    keys = jax.random.split(jax.random.key(9), n_out)
    cols = [jnp.zeros(n_in, bool).at[jax.random.permutation(kk, n_in)[:k]].set(True) for kk in keys]
    mask = jnp.stack(cols, axis=1)
    layer.set_mask(mask, jax.random.normal(jax.random.key(4), (n_in, n_out)))
    return layer


def test_normalised_equals_control_when_s_equals_n():
    x = jax.random.uniform(jax.random.key(0), (8, 30))
    control = _equal_in_degree_layer(False, 25.0)
    normalised = _equal_in_degree_layer(True, 6.0)  # s = n_i = 6 for every neuron
    np.testing.assert_allclose(normalised.weights(), control.weights(), rtol=1e-6)
    np.testing.assert_allclose(normalised(x), control(x), rtol=1e-5, atol=1e-6)


def test_normalised_differs_from_control_otherwise():
    x = jax.random.uniform(jax.random.key(0), (8, 30))
    control = _equal_in_degree_layer(False, 25.0)
    normalised = _equal_in_degree_layer(True, 25.0)
    assert not np.allclose(normalised(x), control(x), rtol=1e-3)
    np.testing.assert_allclose(normalised.weights(), control.weights() * 25.0 / 6.0, rtol=1e-6)


def test_gradients_off_the_mask_are_zero():
    layer = SparseDense(40, 10, eps=0.3, normalise=True, rngs=nnx.Rngs(1))
    graphdef, params, rest = nnx.split(layer, nnx.Param, ...)
    x = jax.random.uniform(jax.random.key(2), (4, 40))
    g = jax.grad(lambda p: (nnx.merge(graphdef, p, rest)(x) ** 2).sum())(params)
    mask = np.asarray(layer.mask[...])
    gv = np.asarray(g["v"][...])
    assert np.all(gv[~mask] == 0)
    assert np.count_nonzero(gv[mask]) > 0.9 * mask.sum()


def test_contact_count_is_exact():
    layer = SparseDense(784, 100, eps=0.2, normalise=False, rngs=nnx.Rngs(0))
    assert int(layer.mask[...].sum()) == round(0.2 * 784 * 100) == layer.n_contacts
    np.testing.assert_array_equal(layer.n_aff[...], layer.mask[...].sum(0))
    assert np.all(np.asarray(layer.v[...])[~np.asarray(layer.mask[...])] == 0)


def test_shared_s_is_one_parameter():
    net = SparseMLP(784, (100, 100, 100), 10, rngs=nnx.Rngs(0))
    assert net.hidden[0].s is net.hidden[1].s is net.hidden[2].s
    _, params, _ = nnx.split(net, nnx.Param, ...)
    s_leaves = [p for p, _ in nnx.to_flat_state(params) if p[-1] == "s"]
    assert len(s_leaves) == 1
    net2 = SparseMLP(784, (100, 100), 10, shared_s=False, rngs=nnx.Rngs(0))
    assert net2.hidden[0].s is not net2.hidden[1].s


def test_initialisation_as_in_the_authors_code():
    net = SparseMLP(784, (300,), 10, rngs=nnx.Rngs(0))
    layer = net.hidden[0]
    v = np.asarray(layer.v[...])[np.asarray(layer.mask[...])]
    assert abs(v.mean()) < 0.02 and abs(v.std() - 1) < 0.02
    assert float(layer.s[...]) == 25.0
    k = np.asarray(net.out.kernel[...])
    assert abs(k.std() - 1) < 0.1 and abs(np.asarray(net.out.bias[...]).std()) > 0.2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(eps=0.0), "eps"),
        (dict(eps=1.5), "eps"),
        (dict(hidden=(0,)), ">= 1"),
        (dict(hidden=()), "1 to 3"),
        (dict(hidden=(5, 5, 5, 5)), "1 to 3"),
        (dict(activation="tanh"), "unknown activation"),
    ],
)
def test_bad_network_arguments(kwargs, message):
    args = dict(n_in=784, hidden=(10,), n_out=10, rngs=nnx.Rngs(0))
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        SparseMLP(**args)


def test_conv_net_shapes_and_sparse_layer():
    net = SparseConvNet(normalise=True, rngs=nnx.Rngs(0))
    assert net.n_flat == 2880
    assert net.sparse.mask[...].shape == (2880, 100)
    assert net(jnp.zeros((3, 784))).shape == (3, 10)
    assert int(net.sparse.mask[...].sum()) == round(0.2 * 2880 * 100)
