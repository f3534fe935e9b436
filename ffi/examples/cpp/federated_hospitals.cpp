// Three hospitals and a coordinator in one C++17 program, through libfedotp's C API only.
//
// Each hospital holds its own images in the form its software has them — 8-bit RGB rows with
// padding, 16-bit grayscale with a window, 8-bit grayscale and an encoded PNG — trains FedOTP's
// global and local prompts on them, and sends only its global prompt, as a wire-format message,
// to the coordinator, whose aggregator averages the round's messages and sends the new global
// prompt back. Two rounds, three training threads, then every hospital predicts its held-out
// images with its personal prompts. Along the way the program checks what a careful integrator
// would: the server's average against one computed here, the installed prompt bit for bit,
// progress reports, cancellation leaving the client untouched, a saved and reloaded client
// predicting identically, and every handle freed.
//
// Usage: federated_hospitals WORK_DIR [DEVICE]
//   WORK_DIR  client states are saved there;
//   DEVICE    where the clients compute: "cpu" (the default), "cuda", "cuda:N" or "auto".
// Exit status 0 when every check passes.

#include <fedotp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

// ---- errors and handles ----------------------------------------------------------------------

// Throws with libfedotp's detail when a call fails.
void check(int32_t status, const char *what) {
    if (status != FEDOTP_OK) {
        throw std::runtime_error(std::string(what) + ": " + fedotp_status_str(status) + " (" +
                                 fedotp_last_error_message() + ")");
    }
}

void expect(bool condition, const std::string &what) {
    if (!condition) throw std::runtime_error("check failed: " + what);
}

// An owning handle: frees with the matching fedotp_*_free.
template <typename T, int32_t (*Free)(T *)>
struct Deleter {
    void operator()(T *handle) const { Free(handle); }
};
using Model = std::unique_ptr<FedotpModel, Deleter<FedotpModel, fedotp_model_free>>;
using Client = std::unique_ptr<FedotpClient, Deleter<FedotpClient, fedotp_client_free>>;
using Images = std::unique_ptr<FedotpImages, Deleter<FedotpImages, fedotp_images_free>>;
using Aggregator =
    std::unique_ptr<FedotpAggregator, Deleter<FedotpAggregator, fedotp_aggregator_free>>;

Images new_images() {
    FedotpImages *images = nullptr;
    check(fedotp_images_new(&images), "fedotp_images_new");
    return Images(images);
}

// ---- synthetic scans ---------------------------------------------------------------------------

const char *const CLASS_NAMES[] = {"dark tissue", "bright tissue", "striped tissue"};
constexpr size_t NUM_CLASSES = 3;
constexpr uint32_t WIDTH = 24, HEIGHT = 20;

// A deterministic generator for the images' noise.
struct Noise {
    uint64_t state;
    int next(int amplitude) {
        state = state * 6364136223846793005ULL + 1442695040888963407ULL;
        return static_cast<int>((state >> 33) % (2 * amplitude + 1)) - amplitude;
    }
};

// Gray level (0-255) of pixel (x, y) of an image of class `label`.
int level(size_t label, uint32_t x, Noise &noise) {
    int base = label == 0 ? 40 : label == 1 ? 210 : ((x / 3) % 2 ? 210 : 40);
    return std::clamp(base + noise.next(20), 0, 255);
}

// How a hospital's software hands over its images.
enum class Format { Rgb8Padded, Gray16Windowed, Gray8Padded };

// Adds `per_class` images of every class to `images`, in `format`.
void add_scans(FedotpImages *images, Format format, size_t per_class, uint64_t seed) {
    Noise noise{seed};
    for (size_t label = 0; label < NUM_CLASSES; label++) {
        for (size_t n = 0; n < per_class; n++) {
            switch (format) {
            case Format::Rgb8Padded: {
                size_t stride = 3 * WIDTH + 5;  // rows padded, as many imaging libraries do
                std::vector<uint8_t> rows(stride * HEIGHT, 0xEE);
                for (uint32_t y = 0; y < HEIGHT; y++)
                    for (uint32_t x = 0; x < WIDTH; x++)
                        for (int c = 0; c < 3; c++)
                            rows[y * stride + 3 * x + c] = static_cast<uint8_t>(level(label, x, noise));
                check(fedotp_images_add_rgb8(images, rows.data(), WIDTH, HEIGHT, stride,
                                             static_cast<uint32_t>(label)),
                      "fedotp_images_add_rgb8");
                break;
            }
            case Format::Gray16Windowed: {
                // A CT-like range: stored values 1000 + 16 * level, shown through a window that
                // maps them back onto 0-255.
                std::vector<uint16_t> rows(WIDTH * HEIGHT);
                for (uint32_t y = 0; y < HEIGHT; y++)
                    for (uint32_t x = 0; x < WIDTH; x++)
                        rows[y * WIDTH + x] = static_cast<uint16_t>(1000 + 16 * level(label, x, noise));
                FedotpGrayWindow window{1000.0 + 16.0 * 128.0, 16.0 * 256.0};
                check(fedotp_images_add_gray16(images, rows.data(), WIDTH, HEIGHT, WIDTH, &window,
                                               static_cast<uint32_t>(label)),
                      "fedotp_images_add_gray16");
                break;
            }
            case Format::Gray8Padded: {
                size_t stride = WIDTH + 3;
                std::vector<uint8_t> rows(stride * HEIGHT, 0);
                for (uint32_t y = 0; y < HEIGHT; y++)
                    for (uint32_t x = 0; x < WIDTH; x++)
                        rows[y * stride + x] = static_cast<uint8_t>(level(label, x, noise));
                check(fedotp_images_add_gray8(images, rows.data(), WIDTH, HEIGHT, stride,
                                              static_cast<uint32_t>(label)),
                      "fedotp_images_add_gray8");
                break;
            }
            }
        }
    }
}

// A 2 x 1 PNG (a red and a blue pixel), as a file from a PACS export would arrive.
const uint8_t PNG_BYTES[] = {
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48,
    0x44, 0x52, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x08, 0x02, 0x00, 0x00,
    0x00, 0x7b, 0x40, 0xe8, 0xdd, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78,
    0x9c, 0x63, 0xf8, 0xcf, 0x00, 0x04, 0xff, 0x01, 0x07, 0x00, 0x01, 0xff, 0xe2, 0x23,
    0x9e, 0x59, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82};

// ---- a hospital --------------------------------------------------------------------------------

struct Hospital {
    uint32_t id;
    float first_loss = 0;  // round 0's training loss
    Client client;
    Images train;
    Images test;
    FedotpTrainReport report{};
    std::vector<std::pair<uint64_t, uint64_t>> progress;  // (done, total) as reported
};

// The device every client computes on (the second argument).
const char *device = "cpu";

FedotpClientConfig client_config(uint64_t seed) {
    FedotpClientConfig config;
    check(fedotp_client_config_default(&config), "fedotp_client_config_default");
    config.n_ctx = 4;
    config.learning_rate = 0.01f;
    config.batch_size = 4;
    config.augment = 0;
    config.seed = seed;
    config.device = device;
    return config;
}

Client new_client(const FedotpModel *model, uint64_t seed) {
    FedotpClientConfig config = client_config(seed);
    FedotpClient *client = nullptr;
    check(fedotp_client_new(model, CLASS_NAMES, NUM_CLASSES, &config, &client),
          "fedotp_client_new");
    return Client(client);
}

std::vector<float> global_prompt(const FedotpClient *client, size_t n_ctx, size_t width) {
    std::vector<float> prompt(n_ctx * width);
    check(fedotp_client_global_prompt(client, prompt.data(), n_ctx, width),
          "fedotp_client_global_prompt");
    return prompt;
}

void record_progress(uint64_t done, uint64_t total, void *user_data) {
    static_cast<Hospital *>(user_data)->progress.emplace_back(done, total);
}

std::vector<uint8_t> update_message(const FedotpClient *client, uint32_t id) {
    size_t size = 0;
    check(fedotp_client_update_message_size(client, &size), "fedotp_client_update_message_size");
    std::vector<uint8_t> message(size);
    size_t written = 0;
    check(fedotp_client_write_update(client, id, message.data(), message.size(), &written),
          "fedotp_client_write_update");
    expect(written == size, "the update fills the size queried");
    return message;
}

std::vector<float> predict(FedotpClient *client, FedotpImages *images) {
    size_t count = 0;
    check(fedotp_images_count(images, &count), "fedotp_images_count");
    std::vector<float> probabilities(count * NUM_CLASSES);
    check(fedotp_client_predict(client, images, probabilities.data(), probabilities.size()),
          "fedotp_client_predict");
    return probabilities;
}

// ---- the federation ----------------------------------------------------------------------------

int run(const std::string &work_dir) {
    std::printf("libfedotp %s\n", fedotp_version());
    uint32_t cpu = 0, chosen = 0;
    check(fedotp_device_available("cpu", &cpu), "fedotp_device_available");
    expect(cpu == 1, "the CPU is available");
    check(fedotp_device_available(device, &chosen), "fedotp_device_available");
    expect(chosen == 1, "the chosen device is available");
    std::printf("clients compute on: %s\n", device);

    FedotpModel *raw_model = nullptr;
    check(fedotp_model_new_tiny(7, &raw_model), "fedotp_model_new_tiny");
    Model model(raw_model);
    FedotpModelInfo info;
    check(fedotp_model_info(model.get(), &info), "fedotp_model_info");
    std::printf("model: %u px images, %u image tokens, prompt width %u\n", info.image_size,
                info.image_tokens, info.text_width);

    const Format formats[] = {Format::Rgb8Padded, Format::Gray16Windowed, Format::Gray8Padded};
    std::vector<Hospital> hospitals;
    for (uint32_t i = 0; i < 3; i++) {
        Hospital h{i, 0, new_client(model.get(), 100 + i), new_images(), new_images(), {}, {}};
        add_scans(h.train.get(), formats[i], 2 + i, 10 + i);  // 6, 9 and 12 training images
        add_scans(h.test.get(), formats[i], 1, 20 + i);
        hospitals.push_back(std::move(h));
    }
    check(fedotp_images_add_encoded(hospitals[2].test.get(), PNG_BYTES, sizeof PNG_BYTES,
                                    FEDOTP_NO_LABEL),
          "fedotp_images_add_encoded");

    uint32_t kind = 0, ordinal = 0;
    check(fedotp_client_device(hospitals[0].client.get(), &kind, &ordinal), "fedotp_client_device");
    std::printf("hospital 0 computes on: %s\n",
                kind == FEDOTP_DEVICE_CUDA ? ("cuda:" + std::to_string(ordinal)).c_str() : "cpu");
    expect(std::string(device) != "cpu" || kind == FEDOTP_DEVICE_CPU, "a CPU client is on the CPU");
    expect(std::string(device).rfind("cuda", 0) != 0 || kind == FEDOTP_DEVICE_CUDA,
           "a CUDA client is on a GPU");

    size_t n_ctx = 0, width = 0;
    check(fedotp_client_prompt_shape(hospitals[0].client.get(), &n_ctx, &width),
          "fedotp_client_prompt_shape");
    expect(n_ctx == 4 && width == info.text_width, "the prompt shape is n_ctx x text width");

    FedotpAggregator *raw_aggregator = nullptr;
    check(fedotp_aggregator_new(n_ctx, width, 0, 3, &raw_aggregator), "fedotp_aggregator_new");
    Aggregator aggregator(raw_aggregator);

    const uint32_t epochs = 2;
    for (uint32_t round = 0; round < 2; round++) {
        // Every hospital trains at once, each on its own thread and client.
        std::vector<std::thread> threads;
        std::vector<std::string> errors(hospitals.size());
        for (size_t i = 0; i < hospitals.size(); i++) {
            threads.emplace_back([&, i] {
                Hospital &h = hospitals[i];
                h.progress.clear();
                int32_t status = fedotp_client_train(h.client.get(), h.train.get(), epochs,
                                                     record_progress, &h, nullptr, &h.report);
                if (status != FEDOTP_OK)
                    errors[i] = std::string(fedotp_status_str(status)) + ": " +
                                fedotp_last_error_message();
            });
        }
        for (auto &thread : threads) thread.join();
        for (size_t i = 0; i < hospitals.size(); i++)
            expect(errors[i].empty(), "hospital " + std::to_string(i) + " trains: " + errors[i]);

        // The coordinator collects the messages and averages them; here the same average is
        // computed from the prompts themselves, weighted by training-set size.
        check(fedotp_aggregator_start_round(aggregator.get(), round), "start_round");
        std::vector<double> expected(n_ctx * width, 0.0);
        double total = 0.0;
        for (Hospital &h : hospitals) {
            size_t images = 0;
            check(fedotp_images_count(h.train.get(), &images), "fedotp_images_count");
            uint64_t steps_per_epoch = (images + 3) / 4;
            expect(h.progress.size() == epochs * steps_per_epoch, "a progress report per step");
            for (size_t s = 0; s < h.progress.size(); s++)
                expect(h.progress[s].first == s + 1 && h.progress[s].second == epochs * steps_per_epoch,
                       "progress counts steps up to the total");
            expect(std::isfinite(h.report.loss) && h.report.loss > 0, "a positive finite loss");
            expect(h.report.accuracy >= 0 && h.report.accuracy <= 1, "accuracy in [0, 1]");
            expect(h.report.steps == epochs * steps_per_epoch, "every step taken");
            std::printf("round %u hospital %u: %zu images, loss %.4f, accuracy %.2f\n", round,
                        h.id, images, h.report.loss, h.report.accuracy);
            // The federation learns: every hospital's loss falls from round 0 to round 1.
            if (round == 0) h.first_loss = h.report.loss;
            else expect(h.report.loss < h.first_loss, "the training loss falls over the rounds");

            std::vector<float> prompt = global_prompt(h.client.get(), n_ctx, width);
            for (size_t k = 0; k < prompt.size(); k++) expected[k] += images * double(prompt[k]);
            total += double(images);

            std::vector<uint8_t> message = update_message(h.client.get(), h.id);
            FedotpClientUpdateHeader header;
            check(fedotp_aggregator_add_message(aggregator.get(), message.data(), message.size(),
                                                &header),
                  "fedotp_aggregator_add_message");
            expect(header.round == round && header.client == h.id && header.samples == images,
                   "the message carries the round, the client and its weight");
            expect(header.has_loss && header.loss == h.report.loss, "the message carries the loss");
        }
        std::vector<float> average(n_ctx * width);
        check(fedotp_aggregator_finish(aggregator.get(), average.data(), n_ctx, width),
              "fedotp_aggregator_finish");
        for (size_t k = 0; k < average.size(); k++)
            expect(std::fabs(average[k] - expected[k] / total) <= 1e-6f * (1 + std::fabs(average[k])),
                   "the server's average matches the weighted mean");

        // The new global prompt goes back to every hospital as a message.
        size_t size = 0;
        check(fedotp_global_prompt_size(n_ctx, width, &size), "fedotp_global_prompt_size");
        std::vector<uint8_t> message(size);
        size_t written = 0;
        check(fedotp_global_prompt_encode(round + 1, average.data(), n_ctx, width, message.data(),
                                          message.size(), &written),
              "fedotp_global_prompt_encode");
        for (Hospital &h : hospitals) {
            uint32_t installed_round = 0;
            check(fedotp_client_read_global(h.client.get(), message.data(), written,
                                            &installed_round),
                  "fedotp_client_read_global");
            expect(installed_round == round + 1, "the client joins the next round");
            expect(global_prompt(h.client.get(), n_ctx, width) == average,
                   "the installed global prompt is the server's, bit for bit");
            size_t unused = 0;
            expect(fedotp_client_write_update(h.client.get(), h.id, message.data(), 0, &unused) ==
                       FEDOTP_ERR_NOT_TRAINED,
                   "no update before training on the new prompt");
        }
    }

    // Each hospital predicts its held-out images with its own [global, local] prompts.
    for (Hospital &h : hospitals) {
        std::vector<float> probabilities = predict(h.client.get(), h.test.get());
        size_t correct = 0, rows = probabilities.size() / NUM_CLASSES;
        for (size_t row = 0; row < rows; row++) {
            const float *p = &probabilities[row * NUM_CLASSES];
            double sum = 0;
            for (size_t c = 0; c < NUM_CLASSES; c++) {
                expect(p[c] >= 0 && p[c] <= 1, "a probability in [0, 1]");
                sum += p[c];
            }
            expect(std::fabs(sum - 1.0) < 1e-5, "probabilities sum to 1");
            size_t best = std::max_element(p, p + NUM_CLASSES) - p;
            correct += row < NUM_CLASSES && best == row;  // the labelled rows come in class order
        }
        std::printf("hospital %u predicts %zu of %zu labelled test images right\n", h.id, correct,
                    NUM_CLASSES);
        // Chance is 1 in 3; the prompts learned the three patterns (3 of 3 on this seed).
        expect(correct >= 2, "the personal prompts classify the held-out images");
    }

    // A hospital restarts: a new client loads the saved state and predicts identically.
    Hospital &first = hospitals[0];
    std::string state = work_dir + "/hospital0.safetensors";
    check(fedotp_client_save(first.client.get(), state.c_str()), "fedotp_client_save");
    Client restarted = new_client(model.get(), 999);
    check(fedotp_client_load(restarted.get(), state.c_str()), "fedotp_client_load");
    expect(predict(restarted.get(), first.test.get()) == predict(first.client.get(), first.test.get()),
           "the reloaded client predicts as the saved one");

    // Cancelling a training leaves the client exactly as it was.
    std::vector<float> before = global_prompt(restarted.get(), n_ctx, width);
    struct Cancel {
        std::atomic<uint32_t> flag{0};
        uint64_t calls = 0;
    } cancel;
    auto cancel_after_first_step = [](uint64_t, uint64_t, void *user_data) {
        auto *c = static_cast<Cancel *>(user_data);
        c->calls++;
        c->flag.store(1);
    };
    static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t), "an atomic is a uint32_t");
    int32_t status = fedotp_client_train(restarted.get(), first.train.get(), 5,
                                         cancel_after_first_step, &cancel,
                                         reinterpret_cast<const uint32_t *>(&cancel.flag), nullptr);
    expect(status == FEDOTP_ERR_CANCELLED, "training stops when the flag is set");
    expect(cancel.calls == 1, "it stops after the step that saw the flag");
    expect(global_prompt(restarted.get(), n_ctx, width) == before, "a cancelled training changes nothing");

    restarted.reset();
    hospitals.clear();
    aggregator.reset();
    model.reset();
    size_t live = 1;
    check(fedotp_live_handles(&live), "fedotp_live_handles");
    expect(live == 0, "every handle freed");
    std::printf("all federated-hospital checks passed\n");
    return 0;
}

}  // namespace

int main(int argc, char **argv) {
    if (argc != 2 && argc != 3) {
        std::fprintf(stderr, "usage: %s WORK_DIR [DEVICE]\n", argv[0]);
        return 2;
    }
    if (argc == 3) device = argv[2];
    try {
        return run(argv[1]);
    } catch (const std::exception &error) {
        std::fprintf(stderr, "federated_hospitals: %s\n", error.what());
        return 1;
    }
}
