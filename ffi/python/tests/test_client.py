"""A whole round on the tiny model: train, update message, aggregation, global prompt,
prediction, save and restore — and cancelling a training from its progress callback."""

from pathlib import Path

import numpy as np
import pytest

import fedotp
from conftest import CLASSES, tiny_images


def test_a_federated_round(model, tmp_path):
    clients = []
    for index in range(3):
        client = fedotp.Client(model, CLASSES, n_ctx=4, batch_size=4, seed=100 + index, device="cpu")
        client.add_images(tiny_images(3 * (index + 1), seed=index), labels=[0, 1, 2] * (index + 1))
        clients.append(client)
    assert clients[0].device == "cpu"
    n_ctx, width = clients[0].prompt_shape
    assert (n_ctx, width) == (4, model.info["text_width"])

    steps = []
    reports = [c.train(epochs=2, progress=lambda done, total: steps.append((done, total))) for c in clients]
    assert all(np.isfinite(r.loss) and 0.0 <= r.accuracy <= 1.0 and r.steps > 0 for r in reports)
    assert steps[-1][0] == steps[-1][1]  # the progress reaches its total

    aggregator = fedotp.Aggregator(n_ctx, width, round=0)
    for index, client in enumerate(clients):
        header = aggregator.add_message(client.update_message(client_id=index))
        assert (header.client, header.samples, header.round) == (index, client.num_images, 0)
        assert header.loss == pytest.approx(reports[index].loss)
    # The server's rule, computed independently: the sample-weighted mean of the prompts.
    weights = np.array([c.num_images for c in clients], dtype=np.float64)
    prompts = np.stack([c.global_prompt for c in clients]).astype(np.float64)
    expected = (weights[:, None, None] * prompts).sum(axis=0) / weights.sum()
    np.testing.assert_allclose(aggregator.average(), expected, rtol=1e-6, atol=1e-7)

    message = aggregator.finish()
    round_number, decoded = fedotp.decode_global_prompt(message, n_ctx, width)
    assert round_number == 1 and np.array_equal(decoded, aggregator.average())
    for client in clients:
        assert client.apply_global(message) == 1
        assert np.array_equal(client.global_prompt, decoded)
        with pytest.raises(fedotp.NotTrained):  # a new round: train before sending
            client.update_message()

    images = tiny_images(5, seed=42)
    probabilities = clients[0].predict(images)
    assert probabilities.shape == (5, len(CLASSES)) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert np.array_equal(clients[0].predict(fedotp.Images(images)), probabilities)

    path = tmp_path / "client0.safetensors"
    clients[0].save(path)
    restored = fedotp.Client.load(path, model, CLASSES, n_ctx=4, batch_size=4)
    assert np.array_equal(restored.global_prompt, clients[0].global_prompt)
    assert np.array_equal(restored.predict(images), probabilities)


def test_training_is_reproducible_from_the_seed(model):
    def trained():
        client = fedotp.Client(model, CLASSES, n_ctx=4, batch_size=4, seed=3)
        client.add_images(tiny_images(6), labels=[0, 1, 2] * 2)
        client.train(epochs=1)
        return client.update_message(client_id=1)

    assert trained() == trained()


def test_a_cancel_from_the_progress_callback_leaves_the_client_unchanged(client):
    before = (client.global_prompt, client.predict(tiny_images(2, seed=9)))

    def interrupt(done, total):
        if done == 2:
            raise KeyboardInterrupt  # what Ctrl-C raises in the callback

    with pytest.raises(fedotp.Cancelled) as raised:
        client.train(epochs=3, progress=interrupt)
    assert isinstance(raised.value.__cause__, KeyboardInterrupt)
    assert raised.value.status_name == "FEDOTP_ERR_CANCELLED"
    assert np.array_equal(client.global_prompt, before[0])
    assert np.array_equal(client.predict(tiny_images(2, seed=9)), before[1])
    with pytest.raises(fedotp.NotTrained):
        client.update_message()
    # The same training, uncancelled, then works.
    assert client.train(epochs=1).steps > 0


def test_a_pending_signal_cancels_the_training(client):
    import os
    import signal

    before = client.global_prompt
    sent = []

    def send_sigint(done, total):
        if not sent:
            sent.append(done)
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, delivered to Python's handler

    with pytest.raises(fedotp.Cancelled) as raised:
        client.train(epochs=3, progress=send_sigint)
    assert isinstance(raised.value.__cause__, KeyboardInterrupt)
    assert np.array_equal(client.global_prompt, before)


def test_uint16_and_gray_images_use_the_c_windowing(model):
    # A 16-bit image windowed to [centre - width/2, centre + width/2] and the 8-bit image
    # of the same levels give the same predictions: the window is the C API's.
    client = fedotp.Client(model, CLASSES, n_ctx=4, seed=5)
    levels = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) % 256
    as_u16 = (levels * 4 + 1000).astype(np.uint16)  # window 1000 .. 2020 maps back to levels
    from_u16 = client.predict([as_u16], window=(1000 + 1020 / 2, 1020))
    from_u8 = client.predict([levels.astype(np.uint8)])
    np.testing.assert_allclose(from_u16, from_u8, atol=1e-6)
    # Gray is replicated to RGB, and a crop of a wider array is read in place.
    rgb = np.repeat(levels.astype(np.uint8)[:, :, None], 3, axis=2)
    wide = np.zeros((32, 40, 3), np.uint8)
    wide[:, 4:36] = rgb
    np.testing.assert_allclose(client.predict([wide[:, 4:36]]), from_u8, atol=1e-6)


def gray16_png(values):
    """A 16-bit grayscale PNG of the 2-D ``values`` (stdlib only: zlib, struct)."""
    import struct
    import zlib

    height, width = values.shape
    rows = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind, data):
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)  # 16-bit, grayscale
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def test_16_bit_png_bytes_and_files_use_the_c_windowing(model, tmp_path):
    # A 16-bit grayscale PNG through a window predicts as the uint16 array of its values through
    # the same window (and the 8-bit image of the levels it maps to); without one, as the array
    # over the full range.
    client = fedotp.Client(model, CLASSES, n_ctx=4, seed=5)
    levels = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) % 256
    as_u16 = (levels * 4 + 1000).astype(np.uint16)
    png = gray16_png(as_u16)
    path = tmp_path / "ct.png"
    path.write_bytes(png)
    window = (1000 + 1020 / 2, 1020)
    from_png, from_path = client.predict([png, path], window=window)
    np.testing.assert_allclose(from_png, client.predict([as_u16], window=window)[0], atol=1e-6)
    np.testing.assert_allclose(from_path, from_png, atol=1e-6)
    np.testing.assert_allclose(from_png, client.predict([levels.astype(np.uint8)])[0], atol=1e-6)
    np.testing.assert_allclose(client.predict([png]), client.predict([as_u16]), atol=1e-6)
    with pytest.raises(fedotp.InvalidArgument) as raised:
        fedotp.Images([png], window=(1000.0, 0.5))
    assert raised.value.status_name == "FEDOTP_ERR_INVALID_WINDOW"


def test_encoded_images_from_bytes_and_paths(model, tmp_path):
    png = (
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS"
        b"\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe\x92\xef\x00\x00"
        b"\x00\x00IEND\xaeB`\x82"
    )
    path = tmp_path / "pixel.png"
    path.write_bytes(png)
    client = fedotp.Client(model, CLASSES, n_ctx=4, seed=5)
    assert client.add_images([png, path, str(path)], labels=[0, 1, 2]) == 3
    by_bytes, by_path = client.predict([png, path])
    assert np.array_equal(by_bytes, by_path)


THREADS_SCRIPT = """
import threading, time
import numpy as np
import fedotp

client = fedotp.Client(fedotp.Model.tiny(7, "cpu"), ["a", "b", "c"], n_ctx=4, batch_size=4, seed=11)
rng = np.random.default_rng(0)
client.add_images([rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(9)], [0, 1, 2] * 3)
started = threading.Event()
reports = []

def progress(done, total):
    started.set()
    time.sleep(0.002)

trainer = threading.Thread(target=lambda: reports.append(client.train(epochs=3, progress=progress)))
trainer.start()
assert started.wait(timeout=30)
prompt = client.global_prompt  # returns once the training is over
trainer.join()
assert len(reports) == 1 and np.array_equal(prompt, client.global_prompt)
"""


def test_other_threads_wait_for_a_training_without_holding_the_gil():
    # The training holds the client; its progress callback needs the GIL. A call on the client
    # from another thread must wait for the training with the GIL released, else neither
    # proceeds — a hang, so the scenario runs in a process of its own with a time limit.
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", THREADS_SCRIPT], timeout=120, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_images_may_come_from_a_generator(model):
    client = fedotp.Client(model, CLASSES, n_ctx=4, seed=2)
    assert client.add_images((image for image in tiny_images(4)), labels=iter([0, 1, 2, 0])) == 4


def test_context_from_words_and_the_released_stopping_rule(model):
    """``ctx_init``: every prompt starts from the words, whatever the seed (nothing is drawn),
    ``_`` read as a space; ``ot_stopping="released"`` trains to another prompt than the
    per-problem rule (the default) from the same start; bad values are refused by name."""

    def new(**settings):
        return fedotp.Client(model, CLASSES, n_ctx=4, batch_size=4, **settings)

    words = new(ctx_init="a photo of a", seed=1).global_prompt
    assert np.array_equal(new(ctx_init="a_photo_of_a", seed=2).global_prompt, words)
    assert not np.array_equal(new(seed=1).global_prompt, words)

    def trained(**settings):
        client = new(seed=3, learning_rate=0.5, **settings)
        client.add_images(tiny_images(6), labels=[0, 1, 2] * 2)
        client.train(epochs=2)
        return client.global_prompt

    per_problem = trained()
    assert np.array_equal(trained(ot_stopping="per_problem"), per_problem)
    assert not np.array_equal(trained(ot_stopping="released"), per_problem)

    with pytest.raises(fedotp.InvalidArgument, match=r"ctx_init.*is 4 tokens.*n_ctx. is 16"):
        fedotp.Client(model, CLASSES, n_ctx=16, ctx_init="a photo of a")
    with pytest.raises(fedotp.InvalidArgument, match="ctx_init.*no tokens"):
        new(ctx_init=" _ ")
    with pytest.raises(fedotp.InvalidArgument, match='ot_stopping.*"batch"'):
        new(ot_stopping="batch")


def test_biomedclip_from_its_hub_directory():
    """BiomedCLIP (a BERT text tower, a timm ViT) loads from open_clip's hub layout — the
    fixture of host/tests/biomedclip.rs — and a client on it starts its context from words read
    with the model's own WordPiece vocabulary, trains and predicts."""
    root = Path(__file__).resolve().parents[3]
    model = fedotp.Model.load(root / "host" / "tests" / "fixtures" / "biomedclip", device="cpu")
    info = model.info
    assert (info["image_size"], info["text_width"], info["context_length"]) == (16, 48, 256)
    client = fedotp.Client(model, ["normal", "pneumonia"], n_ctx=2, batch_size=4, ctx_init="chest x")
    start = client.global_prompt
    assert start.shape == (2, 48)
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 256, (20, 20, 3), dtype=np.uint8) for _ in range(6)]
    client.add_images(images, labels=[0, 1] * 3)
    client.train(epochs=1)
    assert not np.array_equal(client.global_prompt, start)
    probabilities = client.predict(images)
    assert probabilities.shape == (6, 2)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)

