"""Every class of bad input raises the right exception, with a message that names the problem,
and changes nothing."""

import numpy as np
import pytest

import fedotp
from conftest import CLASSES, tiny_images

SIM = np.random.default_rng(0).uniform(-1, 1, (12, 3)).astype(np.float32)


def test_every_status_of_the_c_library_has_a_class():
    assert len(fedotp.STATUS_CODES) > 40
    assert fedotp.STATUS_CODES["FEDOTP_OK"] == 0
    for name, code in fedotp.STATUS_CODES.items():
        if code == 0:
            continue
        error = fedotp._errors.from_status(code, "detail")
        assert isinstance(error, fedotp.Error) and error.status == code and error.status_name == name


@pytest.mark.parametrize("bad", [SIM.astype(np.float64), SIM.astype(np.float16), SIM.tolist()])
def test_a_wrong_dtype_is_a_type_error(bad):
    with pytest.raises(fedotp.WrongDType, match="float32") as raised:
        fedotp.ot_plan(bad)
    assert isinstance(raised.value, TypeError)


@pytest.mark.parametrize("shape", [(12,), (2, 2, 3, 3)])
def test_a_wrong_rank_is_a_shape_mismatch(shape):
    with pytest.raises(fedotp.ShapeMismatch, match=r"\(M, N\) or \(B, M, N\)"):
        fedotp.ot_plan(np.zeros(shape, dtype=np.float32))


def test_a_non_contiguous_array_is_refused_not_copied():
    with pytest.raises(fedotp.NonContiguous, match="ascontiguousarray") as raised:
        fedotp.ot_plan(np.asfortranarray(SIM))
    assert isinstance(raised.value, ValueError)
    with pytest.raises(fedotp.NonContiguous):
        fedotp.ot_plan(SIM[:, ::2])


def test_nan_is_refused_by_the_library_with_its_message():
    sim = SIM.copy()
    sim[4, 1] = np.nan
    with pytest.raises(fedotp.NonFinite) as raised:
        fedotp.ot_plan(sim)
    assert raised.value.status == fedotp.STATUS_CODES["FEDOTP_ERR_NON_FINITE"]
    assert "13" in str(raised.value) or "index" in str(raised.value)  # names the element


@pytest.mark.parametrize(
    "kwargs,status",
    [
        ({"eps": 0.0}, "FEDOTP_ERR_INVALID_EPS"),
        ({"gamma": 1.5}, "FEDOTP_ERR_INVALID_GAMMA"),
        # Subnormal as f32: the plan would be NaN (eps) or wrong (gamma).
        ({"eps": 1e-39}, "FEDOTP_ERR_INVALID_EPS"),
        # Normal, but far below what f32 resolves against these similarities.
        ({"eps": 1e-30}, "FEDOTP_ERR_INVALID_EPS"),
        ({"gamma": 1e-45}, "FEDOTP_ERR_INVALID_GAMMA"),
        ({"max_iter": 0}, "FEDOTP_ERR_INVALID_MAX_ITER"),
        ({"tol": -1.0}, "FEDOTP_ERR_INVALID_TOL"),
    ],
)
def test_solver_parameters_out_of_range(kwargs, status):
    with pytest.raises(fedotp.InvalidArgument) as raised:
        fedotp.ot_plan(SIM, **kwargs)
    assert raised.value.status_name == status and str(raised.value)


def test_an_empty_dimension_is_refused():
    with pytest.raises(fedotp.InvalidArgument, match="zero|empty|0"):
        fedotp.ot_plan(np.zeros((0, 3), dtype=np.float32))


def test_logits_with_mismatched_feature_sizes():
    with pytest.raises(fedotp.ShapeMismatch, match="8 features.*6"):
        fedotp.ot_logits(np.zeros((4, 8), np.float32), np.zeros((2, 3, 6), np.float32))


def test_bad_message_bytes_leave_the_client_unchanged(client):
    prompt = client.global_prompt
    good = fedotp.encode_global_prompt(1, prompt + 1)
    corrupted = bytearray(good)
    corrupted[40] ^= 0xFF
    cases = {
        b"": "FEDOTP_ERR_MESSAGE_TRUNCATED",
        b"XXXX" + good[4:]: "FEDOTP_ERR_BAD_MAGIC",
        bytes(corrupted): "FEDOTP_ERR_CHECKSUM_MISMATCH",
        good + b"\0": "FEDOTP_ERR_TRAILING_BYTES",
    }
    for message, status in cases.items():
        with pytest.raises(fedotp.BadMessage) as raised:
            client.apply_global(message)
        assert raised.value.status_name == status, raised.value
        assert np.array_equal(client.global_prompt, prompt)
    other_shape = fedotp.encode_global_prompt(1, np.zeros((3, 64), np.float32))
    with pytest.raises(fedotp.ShapeMismatch):
        client.apply_global(other_shape)
    assert np.array_equal(client.global_prompt, prompt)


def test_an_update_is_not_a_global_prompt(client):
    client.train(epochs=1)
    with pytest.raises(fedotp.BadMessage, match="expected a global prompt message, got a client update") as raised:
        client.apply_global(client.update_message())
    assert raised.value.status_name == "FEDOTP_ERR_WRONG_KIND"


def test_images_are_added_all_or_none(client):
    count = client.num_images
    good = tiny_images(2)
    for images, labels, error in [
        (good + [good[0].astype(np.float32)], [0, 1, 2], fedotp.WrongDType),
        (good + [np.zeros((4, 4, 2), np.uint8)], [0, 1, 2], fedotp.ShapeMismatch),
        (good + [np.zeros((32, 32, 3), np.uint8)[:, ::2]], [0, 1, 2], fedotp.NonContiguous),
        (good + [b"not an image"], [0, 1, 2], fedotp.ImageDecode),
        (good + ["/nonexistent/image.png"], [0, 1, 2], fedotp.IoError),
        (good, [0], fedotp.ShapeMismatch),
    ]:
        with pytest.raises(error):
            client.add_images(images, labels)
        assert client.num_images == count


def test_a_label_outside_the_classes_fails_training_and_changes_nothing(model):
    client = fedotp.Client(model, CLASSES, n_ctx=4, batch_size=4, seed=1)
    client.add_images(tiny_images(3), labels=[0, 1, len(CLASSES)])
    prompt = client.global_prompt
    with pytest.raises(fedotp.InvalidArgument, match="label") as raised:
        client.train(epochs=1)
    assert raised.value.status_name == "FEDOTP_ERR_INVALID_LABEL"
    assert np.array_equal(client.global_prompt, prompt)
    with pytest.raises(fedotp.NotTrained):
        client.update_message()


def test_a_state_of_another_class_list_is_refused(client, model, tmp_path):
    path = tmp_path / "state.safetensors"
    client.save(path)
    with pytest.raises(fedotp.StateMismatch, match="class"):
        fedotp.Client.load(path, model, CLASSES[:2], n_ctx=4)
    other = fedotp.Client(model, CLASSES + ["fish"], n_ctx=4)
    before = other.global_prompt
    with pytest.raises(fedotp.StateMismatch):
        other.restore(path)
    assert np.array_equal(other.global_prompt, before)


def test_bad_client_settings(model):
    with pytest.raises(fedotp.InvalidArgument) as raised:
        fedotp.Client(model, CLASSES, learning_rate=-1.0)
    assert raised.value.status_name == "FEDOTP_ERR_INVALID_CONFIG"
    with pytest.raises(fedotp.InvalidArgument):
        fedotp.Client(model, ["cat", "  "])
    with pytest.raises(fedotp.UnsupportedDevice):
        fedotp.Model.tiny(device="tpu")
    with pytest.raises(TypeError):
        fedotp.Client.load("x", model, CLASSES, no_such_setting=1)


def test_nothing_is_written_when_saving_fails(client, tmp_path):
    target = tmp_path / "missing-dir" / "state.safetensors"
    with pytest.raises(fedotp.IoError):
        client.save(target)
    assert not target.parent.exists()


def test_the_aggregator_refuses_and_stays_as_it_was(client):
    aggregator = fedotp.Aggregator(*client.prompt_shape, round=0)
    with pytest.raises(fedotp.AggregationError) as raised:
        aggregator.finish()
    assert raised.value.status_name == "FEDOTP_ERR_NO_UPDATES"
    client.train(epochs=1)
    message = client.update_message(client_id=5)
    aggregator.add_message(message)
    with pytest.raises(fedotp.AggregationError, match="client"):
        aggregator.add_message(message)
    with pytest.raises(fedotp.BadMessage):
        aggregator.add_message(message[:-1])
    assert aggregator.clients == 1 and aggregator.total_samples == client.num_images
