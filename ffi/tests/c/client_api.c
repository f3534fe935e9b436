/* Calls every function of libfedotp's client API from C — version and devices, models, image
 * sets, clients, exchange, prediction, saved states — with good arguments and with bad ones:
 * NULL pointers, zero and huge sizes, freed, forged and wrong-type handles, malformed messages
 * and files. Each call must return the documented status, and a failed call must write nothing.
 * Exits non-zero if any check fails. Built and run by ffi/tests/c_program.rs, which defines
 * FEDOTP_SOURCE_DIR (the repository) and FEDOTP_SCRATCH_DIR (a writable directory). */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "check.h"

static const int32_t NEW_STATUSES[] = {
    FEDOTP_ERR_INVALID_UTF8,     FEDOTP_ERR_IO,           FEDOTP_ERR_MODEL_FORMAT,
    FEDOTP_ERR_INVALID_STRIDE,   FEDOTP_ERR_INVALID_WINDOW, FEDOTP_ERR_IMAGE_DECODE,
    FEDOTP_ERR_UNSUPPORTED_DEVICE, FEDOTP_ERR_INVALID_CONFIG, FEDOTP_ERR_INVALID_CLASS_NAME,
    FEDOTP_ERR_INVALID_LABEL,    FEDOTP_ERR_CANCELLED,    FEDOTP_ERR_NOT_TRAINED,
    FEDOTP_ERR_STATE_MISMATCH,   FEDOTP_ERR_STATE_FORMAT, FEDOTP_ERR_NULL_POINTER,
    FEDOTP_ERR_INVALID_HANDLE,   FEDOTP_ERR_WRONG_HANDLE_TYPE, FEDOTP_ERR_HANDLE_BUSY,
    FEDOTP_ERR_MIXED_IMAGES,     FEDOTP_ERR_DEVICE};

/* A handle value libfedotp never issued (odd, like real ones, but far beyond any id). */
#define FORGED(type) ((type *)(uintptr_t)0x7fffffff1)

static const char *const CLASSES[] = {"dark", "bright"};

static FedotpClientConfig small_config(void) {
    FedotpClientConfig config;
    EXPECT_STATUS(fedotp_client_config_default(&config), FEDOTP_OK);
    config.n_ctx = 2;
    config.batch_size = 2;
    config.augment = 0;
    config.learning_rate = 0.01f;
    return config;
}

/* ---- version and devices ------------------------------------------------------------------ */

static void version_and_devices(void) {
    uint32_t major = 99, minor = 99, patch = 99;
    EXPECT_STATUS(fedotp_version_numbers(&major, &minor, &patch), FEDOTP_OK);
    char expected[64];
    snprintf(expected, sizeof expected, "%u.%u.%u", major, minor, patch);
    CHECK(strcmp(fedotp_version(), expected) == 0, "version %s vs numbers %s", fedotp_version(),
          expected);
    CHECK(major == 0 && minor == 1, "version %s", fedotp_version());
    EXPECT_STATUS(fedotp_version_numbers(NULL, &minor, &patch), FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_version_numbers(&major, &major, &patch), FEDOTP_ERR_ALIASED_BUFFERS);

    uint32_t available = 7;
    EXPECT_STATUS(fedotp_device_available("cpu", &available), FEDOTP_OK);
    CHECK(available == 1, "cpu available: %u", available);
    EXPECT_STATUS(fedotp_device_available("auto", &available), FEDOTP_OK);
    CHECK(available == 1, "auto available: %u", available);
    EXPECT_STATUS(fedotp_device_available("cuda:1", &available), FEDOTP_OK);
    CHECK(available == 0, "cuda:1 on a machine without a second GPU: %u", available);
    available = 7;
    EXPECT_STATUS(fedotp_device_available("gpu", &available), FEDOTP_ERR_UNSUPPORTED_DEVICE);
    EXPECT_STATUS(fedotp_device_available("\xff\xfe", &available), FEDOTP_ERR_INVALID_UTF8);
    EXPECT_STATUS(fedotp_device_available(NULL, &available), FEDOTP_ERR_NULL_POINTER);
    CHECK(available == 7, "a failed call wrote %u", available);
    EXPECT_STATUS(fedotp_device_available("cpu", NULL), FEDOTP_ERR_NULL_POINTER);
}

/* ---- models ------------------------------------------------------------------------------- */

static void expect_info(FedotpModel *model, uint32_t image_size, uint32_t tokens,
                        uint32_t embed_dim) {
    FedotpModelInfo info;
    EXPECT_STATUS(fedotp_model_info(model, &info), FEDOTP_OK);
    CHECK(info.image_size == image_size && info.image_tokens == tokens &&
              info.embed_dim == embed_dim && info.text_width == 64 && info.context_length == 77,
          "model info %u %u %u %u %u", info.image_size, info.image_tokens, info.embed_dim,
          info.text_width, info.context_length);
}

static void models(void) {
    FedotpModel *model = NULL;
    /* The fixtures of both layouts (host/tests/fixtures/clip). */
    EXPECT_STATUS(fedotp_model_load(FEDOTP_SOURCE_DIR "/host/tests/fixtures/clip/hf", &model),
                  FEDOTP_OK);
    expect_info(model, 32, 16, 48);
    EXPECT_STATUS(fedotp_model_free(model), FEDOTP_OK);
    EXPECT_STATUS(fedotp_model_load(FEDOTP_SOURCE_DIR
                                    "/host/tests/fixtures/clip/openai/open_clip_model.safetensors",
                                    &model),
                  FEDOTP_OK);
    expect_info(model, 40, 25, 32);

    /* Its vocabulary has 600 tokens: class names are written with CLIP's 49,408. */
    FedotpClientConfig config = small_config();
    FedotpClient *client = FORGED(FedotpClient);
    EXPECT_STATUS(fedotp_client_new(model, CLASSES, 2, &config, &client),
                  FEDOTP_ERR_INVALID_CLASS_NAME);
    EXPECT_MESSAGE("vocabulary");
    CHECK(client == FORGED(FedotpClient), "a failed fedotp_client_new wrote its handle");
    EXPECT_STATUS(fedotp_model_free(model), FEDOTP_OK);

    FedotpModel *untouched_model = FORGED(FedotpModel);
    EXPECT_STATUS(fedotp_model_load(FEDOTP_SOURCE_DIR "/no/such/weights.safetensors",
                                    &untouched_model),
                  FEDOTP_ERR_IO);
    EXPECT_MESSAGE("weights.safetensors");
    EXPECT_STATUS(fedotp_model_load(FEDOTP_SOURCE_DIR "/host/tests/fixtures/clip/hf/config.json",
                                    &untouched_model),
                  FEDOTP_ERR_MODEL_FORMAT);
    EXPECT_STATUS(fedotp_model_load(FEDOTP_SOURCE_DIR
                                    "/host/tests/fixtures/prompt_step/reference.safetensors",
                                    &untouched_model),
                  FEDOTP_ERR_MODEL_FORMAT);
    EXPECT_STATUS(fedotp_model_load(NULL, &untouched_model), FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_model_load("\xc3\x28", &untouched_model), FEDOTP_ERR_INVALID_UTF8);
    CHECK(untouched_model == FORGED(FedotpModel), "a failed load wrote its handle");
    EXPECT_STATUS(fedotp_model_load(FEDOTP_SOURCE_DIR "/host/tests/fixtures/clip/hf", NULL),
                  FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_model_new_tiny(1, NULL), FEDOTP_ERR_NULL_POINTER);

    EXPECT_STATUS(fedotp_model_new_tiny(1, &model), FEDOTP_OK);
    expect_info(model, 32, 16, 32);
    FedotpModelInfo info;
    poison(&info, sizeof info);
    EXPECT_STATUS(fedotp_model_info(NULL, &info), FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_model_info(FORGED(FedotpModel), &info), FEDOTP_ERR_INVALID_HANDLE);
    EXPECT_STATUS(fedotp_model_info(model, NULL), FEDOTP_ERR_NULL_POINTER);
    FedotpImages *images = NULL;
    EXPECT_STATUS(fedotp_images_new(&images), FEDOTP_OK);
    EXPECT_STATUS(fedotp_model_info((FedotpModel *)images, &info), FEDOTP_ERR_WRONG_HANDLE_TYPE);
    EXPECT_STATUS(fedotp_model_free((FedotpModel *)images), FEDOTP_ERR_WRONG_HANDLE_TYPE);
    CHECK(untouched(&info, sizeof info), "a failed fedotp_model_info wrote its output");
    EXPECT_STATUS(fedotp_images_free(images), FEDOTP_OK);
    EXPECT_STATUS(fedotp_model_free(model), FEDOTP_OK);
    EXPECT_STATUS(fedotp_model_info(model, &info), FEDOTP_ERR_INVALID_HANDLE);
    EXPECT_STATUS(fedotp_model_free(model), FEDOTP_ERR_INVALID_HANDLE);
    EXPECT_STATUS(fedotp_model_free(NULL), FEDOTP_OK);
}

/* ---- image sets --------------------------------------------------------------------------- */

static const uint8_t PNG_2x1[] = {
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48,
    0x44, 0x52, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x08, 0x02, 0x00, 0x00,
    0x00, 0x7b, 0x40, 0xe8, 0xdd, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78,
    0x9c, 0x63, 0xf8, 0xcf, 0x00, 0x04, 0xff, 0x01, 0x07, 0x00, 0x01, 0xff, 0xe2, 0x23,
    0x9e, 0x59, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82};

/* A 5 x 3 16-bit grayscale PNG of the values 17 * i (i = 0..14, row by row): through the window
 * centre 128, width 256 (which maps v to v / 255) the levels 17 * i. */
static const uint8_t PNG16_5x3[] = {
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48,
    0x44, 0x52, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x03, 0x10, 0x00, 0x00, 0x00,
    0x00, 0x2e, 0xcd, 0x46, 0x67, 0x00, 0x00, 0x00, 0x29, 0x49, 0x44, 0x41, 0x54, 0x78,
    0xda, 0x63, 0x60, 0x60, 0x60, 0x10, 0x64, 0x50, 0x62, 0x30, 0x66, 0x70, 0x61, 0x60,
    0x08, 0x65, 0x48, 0x63, 0x28, 0x67, 0xe8, 0x60, 0x98, 0xc9, 0xc0, 0xb0, 0x8a, 0x61,
    0x37, 0xc3, 0x19, 0x86, 0xbb, 0x0c, 0xef, 0x00, 0x47, 0x2f, 0x06, 0xfa, 0x7a, 0x4e,
    0x27, 0x34, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82};

static size_t count_of(FedotpImages *images) {
    size_t count = 12345;
    EXPECT_STATUS(fedotp_images_count(images, &count), FEDOTP_OK);
    return count;
}

static void image_sets(void) {
    FedotpImages *images = NULL;
    EXPECT_STATUS(fedotp_images_new(NULL), FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_images_new(&images), FEDOTP_OK);
    uint8_t rgb[2 * 10] = {0};
    uint16_t gray16[2 * 4] = {0};
    FedotpGrayWindow window = {1000.0, 400.0};

    /* Good images of every kind. */
    EXPECT_STATUS(fedotp_images_add_rgb8(images, rgb, 3, 2, 10, 0), FEDOTP_OK);
    EXPECT_STATUS(fedotp_images_add_gray8(images, rgb, 4, 2, 10, 1), FEDOTP_OK);
    EXPECT_STATUS(fedotp_images_add_gray16(images, gray16, 4, 2, 4, &window, 1), FEDOTP_OK);
    EXPECT_STATUS(fedotp_images_add_gray16(images, gray16, 4, 2, 4, NULL, FEDOTP_NO_LABEL),
                  FEDOTP_OK);
    EXPECT_STATUS(fedotp_images_add_encoded(images, PNG_2x1, sizeof PNG_2x1, 0), FEDOTP_OK);
    EXPECT_STATUS(fedotp_images_add_encoded_windowed(images, PNG16_5x3, sizeof PNG16_5x3, 1,
                                                     &window),
                  FEDOTP_OK);
    EXPECT_STATUS(fedotp_images_add_encoded_windowed(images, PNG_2x1, sizeof PNG_2x1, 0, NULL),
                  FEDOTP_OK);
    CHECK(count_of(images) == 7, "7 images added");

    /* Every refusal leaves the set as it was. */
    EXPECT_STATUS(fedotp_images_add_rgb8(images, NULL, 3, 2, 10, 0), FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_images_add_rgb8(images, rgb, 0, 2, 10, 0), FEDOTP_ERR_EMPTY_DIMENSION);
    EXPECT_STATUS(fedotp_images_add_rgb8(images, rgb, 3, 0, 10, 0), FEDOTP_ERR_EMPTY_DIMENSION);
    EXPECT_STATUS(fedotp_images_add_rgb8(images, rgb, 4, 2, 10, 0), FEDOTP_ERR_INVALID_STRIDE);
    EXPECT_MESSAGE("stride 10");
    EXPECT_STATUS(fedotp_images_add_rgb8(images, rgb, UINT32_MAX, 2, SIZE_MAX, 0),
                  FEDOTP_ERR_SIZE_OVERFLOW);
    EXPECT_STATUS(fedotp_images_add_gray8(images, rgb, 1, UINT32_MAX, SIZE_MAX / 2, 0),
                  FEDOTP_ERR_SIZE_OVERFLOW);
    EXPECT_STATUS(fedotp_images_add_gray8(images, rgb, 11, 1, 10, 0), FEDOTP_ERR_INVALID_STRIDE);
    EXPECT_STATUS(fedotp_images_add_gray16(images, gray16, 4, 2, 3, &window, 0),
                  FEDOTP_ERR_INVALID_STRIDE);
    /* A span of more than PTRDIFF_MAX bytes of uint16_t, though its count fits size_t. */
    EXPECT_STATUS(fedotp_images_add_gray16(images, gray16, 1, 2, SIZE_MAX / 3, NULL, 0),
                  FEDOTP_ERR_SIZE_OVERFLOW);
    FedotpGrayWindow narrow = {1000.0, 0.5}, nan_centre = {NAN, 10.0};
    EXPECT_STATUS(fedotp_images_add_gray16(images, gray16, 4, 2, 4, &narrow, 0),
                  FEDOTP_ERR_INVALID_WINDOW);
    EXPECT_STATUS(fedotp_images_add_gray16(images, gray16, 4, 2, 4, &nan_centre, 0),
                  FEDOTP_ERR_INVALID_WINDOW);
    EXPECT_STATUS(fedotp_images_add_encoded(images, PNG_2x1, 0, 0), FEDOTP_ERR_IMAGE_DECODE);
    EXPECT_STATUS(fedotp_images_add_encoded(images, PNG_2x1, sizeof PNG_2x1 - 20, 0),
                  FEDOTP_ERR_IMAGE_DECODE);
    EXPECT_STATUS(fedotp_images_add_encoded(images, (const uint8_t *)"GIF89a..", 8, 0),
                  FEDOTP_ERR_IMAGE_DECODE);
    EXPECT_STATUS(fedotp_images_add_encoded(images, PNG_2x1, SIZE_MAX, 0),
                  FEDOTP_ERR_SIZE_OVERFLOW);
    EXPECT_STATUS(fedotp_images_add_encoded(images, NULL, 10, 0), FEDOTP_ERR_NULL_POINTER);
    /* The window is checked whatever the image: a 16-bit gray one, and an 8-bit RGB one it would
     * not apply to. */
    EXPECT_STATUS(fedotp_images_add_encoded_windowed(images, PNG16_5x3, sizeof PNG16_5x3, 0,
                                                     &narrow),
                  FEDOTP_ERR_INVALID_WINDOW);
    EXPECT_STATUS(fedotp_images_add_encoded_windowed(images, PNG_2x1, sizeof PNG_2x1, 0,
                                                     &nan_centre),
                  FEDOTP_ERR_INVALID_WINDOW);
    EXPECT_MESSAGE("invalid window");
    EXPECT_STATUS(fedotp_images_add_encoded_windowed(images, PNG16_5x3, sizeof PNG16_5x3 - 20, 0,
                                                     &window),
                  FEDOTP_ERR_IMAGE_DECODE);
    EXPECT_STATUS(fedotp_images_add_encoded_windowed(images, PNG16_5x3, SIZE_MAX, 0, &window),
                  FEDOTP_ERR_SIZE_OVERFLOW);
    EXPECT_STATUS(fedotp_images_add_encoded_windowed(images, NULL, 10, 0, &window),
                  FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_images_add_encoded_windowed(NULL, PNG16_5x3, sizeof PNG16_5x3, 0, NULL),
                  FEDOTP_ERR_NULL_POINTER);
    CHECK(count_of(images) == 7, "refused images were not added");

    /* Precomputed tokens: 3 tokens of width 4 per image, in a set of their own. */
    FedotpImages *tokens = NULL;
    EXPECT_STATUS(fedotp_images_new(&tokens), FEDOTP_OK);
    float values[3 * 4];
    for (size_t i = 0; i < 12; i++) values[i] = 0.25f * (float)i - 1.0f;
    EXPECT_STATUS(fedotp_images_add_tokens(tokens, values, 3, 4, 1), FEDOTP_OK);
    EXPECT_STATUS(fedotp_images_add_tokens(tokens, values, 3, 4, FEDOTP_NO_LABEL), FEDOTP_OK);
    EXPECT_STATUS(fedotp_images_add_tokens(tokens, values, 2, 6, 0), FEDOTP_ERR_SHAPE_MISMATCH);
    EXPECT_MESSAGE("2 tokens of width 6");
    EXPECT_STATUS(fedotp_images_add_tokens(tokens, values, 1, 4, 0), FEDOTP_ERR_EMPTY_DIMENSION);
    EXPECT_STATUS(fedotp_images_add_tokens(tokens, values, 3, 0, 0), FEDOTP_ERR_EMPTY_DIMENSION);
    EXPECT_STATUS(fedotp_images_add_tokens(tokens, values, SIZE_MAX, 2, 0),
                  FEDOTP_ERR_SIZE_OVERFLOW);
    EXPECT_STATUS(fedotp_images_add_tokens(tokens, values, SIZE_MAX / 2, 1, 0),
                  FEDOTP_ERR_SIZE_OVERFLOW);
    EXPECT_STATUS(fedotp_images_add_tokens(tokens, NULL, 3, 4, 0), FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_images_add_tokens(NULL, values, 3, 4, 0), FEDOTP_ERR_NULL_POINTER);
    values[5] = NAN;
    EXPECT_STATUS(fedotp_images_add_tokens(tokens, values, 3, 4, 0), FEDOTP_ERR_NON_FINITE);
    EXPECT_MESSAGE("token 1, component 1");
    values[5] = 0.5f;
    /* One kind of input per set. */
    EXPECT_STATUS(fedotp_images_add_gray8(tokens, rgb, 3, 2, 10, 0), FEDOTP_ERR_MIXED_IMAGES);
    EXPECT_STATUS(fedotp_images_add_tokens(images, values, 3, 4, 0), FEDOTP_ERR_MIXED_IMAGES);
    EXPECT_STATUS(fedotp_images_add_encoded_windowed(tokens, PNG16_5x3, sizeof PNG16_5x3, 0,
                                                     &window),
                  FEDOTP_ERR_MIXED_IMAGES);
    CHECK(count_of(tokens) == 2, "refused tokens were not added");
    CHECK(count_of(images) == 7, "tokens were not added to a set of images");
    EXPECT_STATUS(fedotp_images_free(tokens), FEDOTP_OK);

    /* Handles: NULL, forged, wrong type, freed. */
    size_t count = 777;
    EXPECT_STATUS(fedotp_images_add_rgb8(NULL, rgb, 3, 2, 10, 0), FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_images_add_gray8(FORGED(FedotpImages), rgb, 3, 2, 10, 0),
                  FEDOTP_ERR_INVALID_HANDLE);
    EXPECT_STATUS(fedotp_images_count(images, NULL), FEDOTP_ERR_NULL_POINTER);
    FedotpAggregator *aggregator = NULL;
    EXPECT_STATUS(fedotp_aggregator_new(1, 1, 0, 1, &aggregator), FEDOTP_OK);
    EXPECT_STATUS(fedotp_images_count((FedotpImages *)aggregator, &count),
                  FEDOTP_ERR_WRONG_HANDLE_TYPE);
    EXPECT_STATUS(fedotp_images_free((FedotpImages *)aggregator), FEDOTP_ERR_WRONG_HANDLE_TYPE);
    EXPECT_STATUS(fedotp_aggregator_free(aggregator), FEDOTP_OK);
    EXPECT_STATUS(fedotp_images_free(images), FEDOTP_OK);
    EXPECT_STATUS(fedotp_images_count(images, &count), FEDOTP_ERR_INVALID_HANDLE);
    EXPECT_STATUS(fedotp_images_add_encoded(images, PNG_2x1, sizeof PNG_2x1, 0),
                  FEDOTP_ERR_INVALID_HANDLE);
    CHECK(count == 777, "a failed count wrote %zu", count);
    EXPECT_STATUS(fedotp_images_free(images), FEDOTP_ERR_INVALID_HANDLE);
    EXPECT_STATUS(fedotp_images_free(NULL), FEDOTP_OK);
}

/* ---- clients ------------------------------------------------------------------------------ */

/* `per_class` 4 x 4 gray images of each class: dark (20) and bright (230). */
static FedotpImages *labelled_images(size_t per_class) {
    FedotpImages *images = NULL;
    EXPECT_STATUS(fedotp_images_new(&images), FEDOTP_OK);
    for (uint32_t label = 0; label < 2; label++) {
        uint8_t pixels[16];
        for (size_t i = 0; i < per_class; i++) {
            memset(pixels, label ? 230 - (int)i : 20 + (int)i, sizeof pixels);
            EXPECT_STATUS(fedotp_images_add_gray8(images, pixels, 4, 4, 4, label), FEDOTP_OK);
        }
    }
    return images;
}

static void client_creation(FedotpModel *model) {
    FedotpClientConfig good = small_config();
    FedotpClientConfig config = good;
    FedotpClient *client = FORGED(FedotpClient);
    const char *null_name[] = {"dark", NULL};
    const char *blank_name[] = {"dark", "  "};
    /* Blank once `_` is read as a space, as the prompt reads the name. */
    const char *underscore_name[] = {"dark", "_"};
    const char *tab_name[] = {"\t", "dark"};
    const char *bad_utf8[] = {"dark", "\xe2\x82"};
    char long_name[400];
    memset(long_name, 'a', sizeof long_name - 1);
    for (size_t i = 0; i + 1 < sizeof long_name; i += 2) long_name[i] = ' ';
    long_name[sizeof long_name - 1] = 0;
    const char *too_long[] = {"dark", long_name};

    EXPECT_STATUS(fedotp_client_config_default(NULL), FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_client_new(NULL, CLASSES, 2, &config, &client), FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_client_new(FORGED(FedotpModel), CLASSES, 2, &config, &client),
                  FEDOTP_ERR_INVALID_HANDLE);
    EXPECT_STATUS(fedotp_client_new(model, NULL, 2, &config, &client), FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_client_new(model, CLASSES, 0, &config, &client),
                  FEDOTP_ERR_EMPTY_DIMENSION);
    EXPECT_STATUS(fedotp_client_new(model, CLASSES, SIZE_MAX, &config, &client),
                  FEDOTP_ERR_SIZE_OVERFLOW);
    EXPECT_STATUS(fedotp_client_new(model, null_name, 2, &config, &client),
                  FEDOTP_ERR_NULL_POINTER);
    EXPECT_MESSAGE("class_names[1]");
    EXPECT_STATUS(fedotp_client_new(model, blank_name, 2, &config, &client),
                  FEDOTP_ERR_INVALID_CLASS_NAME);
    EXPECT_MESSAGE("class_names[1]");
    EXPECT_STATUS(fedotp_client_new(model, underscore_name, 2, &config, &client),
                  FEDOTP_ERR_INVALID_CLASS_NAME);
    EXPECT_MESSAGE("class_names[1]");
    EXPECT_STATUS(fedotp_client_new(model, tab_name, 2, &config, &client),
                  FEDOTP_ERR_INVALID_CLASS_NAME);
    EXPECT_MESSAGE("class_names[0]");
    EXPECT_STATUS(fedotp_client_new(model, bad_utf8, 2, &config, &client),
                  FEDOTP_ERR_INVALID_UTF8);
    EXPECT_STATUS(fedotp_client_new(model, too_long, 2, &config, &client),
                  FEDOTP_ERR_INVALID_CLASS_NAME);
    EXPECT_MESSAGE("context length");
    EXPECT_STATUS(fedotp_client_new(model, CLASSES, 2, NULL, &client), FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_client_new(model, CLASSES, 2, &config, NULL), FEDOTP_ERR_NULL_POINTER);

    config = good, config.n_ctx = 0;
    EXPECT_STATUS(fedotp_client_new(model, CLASSES, 2, &config, &client), FEDOTP_ERR_EMPTY_DIMENSION);
    config = good, config.n_ctx = 75;
    EXPECT_STATUS(fedotp_client_new(model, CLASSES, 2, &config, &client), FEDOTP_ERR_TOO_LARGE);
    config = good, config.batch_size = 0;
    EXPECT_STATUS(fedotp_client_new(model, CLASSES, 2, &config, &client), FEDOTP_ERR_EMPTY_DIMENSION);
    config = good, config.augment = 2;
    EXPECT_STATUS(fedotp_client_new(model, CLASSES, 2, &config, &client), FEDOTP_ERR_INVALID_CONFIG);
    config = good, config.learning_rate = 0;
    EXPECT_STATUS(fedotp_client_new(model, CLASSES, 2, &config, &client), FEDOTP_ERR_INVALID_CONFIG);
    config = good, config.learning_rate = INFINITY;
    EXPECT_STATUS(fedotp_client_new(model, CLASSES, 2, &config, &client), FEDOTP_ERR_INVALID_CONFIG);
    config = good, config.momentum = 1.0f;
    EXPECT_STATUS(fedotp_client_new(model, CLASSES, 2, &config, &client), FEDOTP_ERR_INVALID_CONFIG);
    config = good, config.weight_decay = -1e-4f;
    EXPECT_STATUS(fedotp_client_new(model, CLASSES, 2, &config, &client), FEDOTP_ERR_INVALID_CONFIG);
    /* Subnormal optimiser settings are refused, as in a run configuration. */
    config = good, config.learning_rate = 1e-40f;
    EXPECT_STATUS(fedotp_client_new(model, CLASSES, 2, &config, &client), FEDOTP_ERR_INVALID_CONFIG);
    config = good, config.momentum = 1e-40f;
    EXPECT_STATUS(fedotp_client_new(model, CLASSES, 2, &config, &client), FEDOTP_ERR_INVALID_CONFIG);
    config = good, config.weight_decay = 1e-40f;
    EXPECT_STATUS(fedotp_client_new(model, CLASSES, 2, &config, &client), FEDOTP_ERR_INVALID_CONFIG);
    config = good, config.ot_stopping = 2;
    EXPECT_STATUS(fedotp_client_new(model, CLASSES, 2, &config, &client), FEDOTP_ERR_INVALID_CONFIG);
    EXPECT_MESSAGE("config->ot_stopping");
    config = good, config.ctx_init = "a photo of a"; /* 4 tokens, n_ctx 2 */
    EXPECT_STATUS(fedotp_client_new(model, CLASSES, 2, &config, &client), FEDOTP_ERR_INVALID_CONFIG);
    EXPECT_MESSAGE("config->n_ctx");
    config = good, config.ctx_init = "\xe2\x82";
    EXPECT_STATUS(fedotp_client_new(model, CLASSES, 2, &config, &client), FEDOTP_ERR_INVALID_UTF8);
    EXPECT_MESSAGE("config->ctx_init");
    /* Context from words and the released stopping rule, as a run configuration's
     * prompt.ctx_init and ot.stopping. */
    config = good, config.n_ctx = 4, config.ctx_init = "a photo of a";
    config.ot_stopping = FEDOTP_OT_STOPPING_RELEASED;
    EXPECT_STATUS(fedotp_client_new(model, CLASSES, 2, &config, &client), FEDOTP_OK);
    EXPECT_STATUS(fedotp_client_free(client), FEDOTP_OK);
    client = FORGED(FedotpClient);
    config = good, config.weight_decay = 0;
    EXPECT_STATUS(fedotp_client_new(model, CLASSES, 2, &config, &client), FEDOTP_OK);
    EXPECT_STATUS(fedotp_client_free(client), FEDOTP_OK);
    client = FORGED(FedotpClient); /* as before: the failing calls below must not write it */
    config = good, config.ot.eps = 0;
    EXPECT_STATUS(fedotp_client_new(model, CLASSES, 2, &config, &client), FEDOTP_ERR_INVALID_EPS);
    config = good, config.ot.gamma = 1.5f;
    EXPECT_STATUS(fedotp_client_new(model, CLASSES, 2, &config, &client), FEDOTP_ERR_INVALID_GAMMA);
    config = good, config.ot.max_iter = 0;
    EXPECT_STATUS(fedotp_client_new(model, CLASSES, 2, &config, &client),
                  FEDOTP_ERR_INVALID_MAX_ITER);
    config = good, config.ot.tol = -1;
    EXPECT_STATUS(fedotp_client_new(model, CLASSES, 2, &config, &client), FEDOTP_ERR_INVALID_TOL);
    config = good, config.ot.balanced = 2;
    EXPECT_STATUS(fedotp_client_new(model, CLASSES, 2, &config, &client),
                  FEDOTP_ERR_INVALID_BALANCED);
    uint32_t has_cuda = 7;
    EXPECT_STATUS(fedotp_device_available("cuda", &has_cuda), FEDOTP_OK);
    if (!has_cuda) {
        config = good, config.device = "cuda";
        EXPECT_STATUS(fedotp_client_new(model, CLASSES, 2, &config, &client),
                      FEDOTP_ERR_UNSUPPORTED_DEVICE);
    }
    config = good, config.device = "cuda:99";
    EXPECT_STATUS(fedotp_client_new(model, CLASSES, 2, &config, &client),
                  FEDOTP_ERR_UNSUPPORTED_DEVICE);
    config = good, config.device = "tpu";
    EXPECT_STATUS(fedotp_client_new(model, CLASSES, 2, &config, &client),
                  FEDOTP_ERR_UNSUPPORTED_DEVICE);
    config = good, config.device = NULL;
    EXPECT_STATUS(fedotp_client_new(model, CLASSES, 2, &config, &client), FEDOTP_ERR_NULL_POINTER);
    CHECK(client == FORGED(FedotpClient), "a failed fedotp_client_new wrote its handle");

    /* Where a client computes: "auto" takes GPU 0 when one can be used, else the CPU. */
    config = good, config.device = "auto";
    EXPECT_STATUS(fedotp_client_new(model, CLASSES, 2, &config, &client), FEDOTP_OK);
    uint32_t kind = 7, ordinal = 7;
    EXPECT_STATUS(fedotp_client_device(client, &kind, &ordinal), FEDOTP_OK);
    CHECK(kind == (has_cuda ? FEDOTP_DEVICE_CUDA : FEDOTP_DEVICE_CPU) && ordinal == 0,
          "auto computes on device kind %u, ordinal %u (cuda available: %u)", kind, ordinal,
          has_cuda);
    kind = 7;
    EXPECT_STATUS(fedotp_client_device(client, NULL, &ordinal), FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_client_device(client, &kind, NULL), FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_client_device(client, &kind, &kind), FEDOTP_ERR_ALIASED_BUFFERS);
    EXPECT_STATUS(fedotp_client_device(FORGED(FedotpClient), &kind, &ordinal),
                  FEDOTP_ERR_INVALID_HANDLE);
    EXPECT_STATUS(fedotp_client_device((const FedotpClient *)model, &kind, &ordinal),
                  FEDOTP_ERR_WRONG_HANDLE_TYPE);
    CHECK(kind == 7, "a failed fedotp_client_device wrote %u", kind);
    EXPECT_STATUS(fedotp_client_free(client), FEDOTP_OK);
}

static float progress_seen = 0;
static void count_progress(uint64_t done, uint64_t total, void *user_data) {
    (void)total;
    progress_seen = (float)done;
    *(uint32_t *)user_data = 1; /* cancels the training through its flag */
}

/* What a progress callback sees when it calls back into libfedotp. */
struct Reentry {
    FedotpClient *client;
    FedotpImages *images;
    FedotpModel *model;
    int32_t on_client, on_images, on_model;
    int32_t freed_client, freed_images; /* what freeing the busy handles returned */
};

static void call_back_in(uint64_t done, uint64_t total, void *user_data) {
    (void)done, (void)total;
    struct Reentry *r = user_data;
    size_t n_ctx, width, count;
    FedotpModelInfo info;
    r->on_client = fedotp_client_prompt_shape(r->client, &n_ctx, &width);
    r->on_images = fedotp_images_count(r->images, &count);
    r->on_model = fedotp_model_info(r->model, &info);
    r->freed_client = fedotp_client_free(r->client);
    r->freed_images = fedotp_images_free(r->images);
}

/* Copies the saved state `from` to `to` with a NaN as the first value of `tensor`: the file is
 * safetensors, an 8-byte little-endian header length, a JSON header that gives each tensor's
 * `data_offsets` into the data after it, then the data. */
static void write_with_nan(const char *from, const char *to, const char *tensor) {
    FILE *in = fopen(from, "rb");
    CHECK(in != NULL, "cannot open %s", from);
    if (in == NULL) return;
    fseek(in, 0, SEEK_END);
    long len = ftell(in);
    fseek(in, 0, SEEK_SET);
    unsigned char *bytes = malloc((size_t)len + 1);
    CHECK(fread(bytes, 1, (size_t)len, in) == (size_t)len, "cannot read %s", from);
    fclose(in);
    bytes[len] = 0;
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--) header_len = (header_len << 8) | bytes[i];
    char quoted[128];
    snprintf(quoted, sizeof quoted, "\"%s\"", tensor);
    const char *entry = strstr((const char *)bytes + 8, quoted);
    const char *offsets = entry ? strstr(entry, "\"data_offsets\":[") : NULL;
    CHECK(offsets != NULL, "%s: no tensor %s", from, tensor);
    if (offsets != NULL) {
        size_t start = strtoull(offsets + strlen("\"data_offsets\":["), NULL, 10);
        const float nan = NAN;
        memcpy(bytes + 8 + header_len + start, &nan, sizeof nan);
        FILE *out = fopen(to, "wb");
        CHECK(out != NULL && fwrite(bytes, 1, (size_t)len, out) == (size_t)len, "cannot write %s",
              to);
        if (out != NULL) fclose(out);
    }
    free(bytes);
}

static void training_exchange_prediction(FedotpModel *model) {
    FedotpClientConfig config = small_config();
    FedotpClient *client = NULL, *other = NULL;
    EXPECT_STATUS(fedotp_client_new(model, CLASSES, 2, &config, &client), FEDOTP_OK);
    config.n_ctx = 3;
    EXPECT_STATUS(fedotp_client_new(model, CLASSES, 2, &config, &other), FEDOTP_OK);
    FedotpImages *train = labelled_images(2), *empty = NULL, *unlabelled = labelled_images(1);
    EXPECT_STATUS(fedotp_images_new(&empty), FEDOTP_OK);
    EXPECT_STATUS(fedotp_images_add_gray8(unlabelled, (const uint8_t *)"abcd", 2, 2, 2,
                                          FEDOTP_NO_LABEL),
                  FEDOTP_OK);
    FedotpImages *out_of_range = labelled_images(1);
    EXPECT_STATUS(fedotp_images_add_gray8(out_of_range, (const uint8_t *)"abcd", 2, 2, 2, 2),
                  FEDOTP_OK);

    size_t n_ctx = 0, width = 0;
    EXPECT_STATUS(fedotp_client_prompt_shape(client, &n_ctx, &width), FEDOTP_OK);
    CHECK(n_ctx == 2 && width == 64, "prompt shape %zu x %zu", n_ctx, width);
    EXPECT_STATUS(fedotp_client_prompt_shape(client, &n_ctx, &n_ctx), FEDOTP_ERR_ALIASED_BUFFERS);
    EXPECT_STATUS(fedotp_client_prompt_shape(client, NULL, &width), FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_client_prompt_shape(FORGED(FedotpClient), &n_ctx, &width),
                  FEDOTP_ERR_INVALID_HANDLE);
    EXPECT_STATUS(fedotp_client_prompt_shape((FedotpClient *)model, &n_ctx, &width),
                  FEDOTP_ERR_WRONG_HANDLE_TYPE);

    float global[2 * 64], before[2 * 64];
    EXPECT_STATUS(fedotp_client_global_prompt(client, before, 2, 64), FEDOTP_OK);
    poison(global, sizeof global);
    EXPECT_STATUS(fedotp_client_global_prompt(client, global, 1, 64), FEDOTP_ERR_SHAPE_MISMATCH);
    EXPECT_STATUS(fedotp_client_global_prompt(client, global, 0, 64), FEDOTP_ERR_EMPTY_DIMENSION);
    EXPECT_STATUS(fedotp_client_global_prompt(client, global, SIZE_MAX, 64),
                  FEDOTP_ERR_SIZE_OVERFLOW);
    EXPECT_STATUS(fedotp_client_global_prompt(client, NULL, 2, 64), FEDOTP_ERR_NULL_POINTER);
    CHECK(untouched(global, sizeof global), "a failed fedotp_client_global_prompt wrote");

    /* Nothing to send before training. */
    size_t size = 0, written = 4242;
    EXPECT_STATUS(fedotp_client_update_message_size(client, &size), FEDOTP_OK);
    CHECK(size == 4 * 2 * 64 + 44, "update size %zu", size);
    EXPECT_STATUS(fedotp_client_update_message_size(client, NULL), FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_client_update_message_size(NULL, &size), FEDOTP_ERR_NULL_POINTER);
    uint8_t *message = malloc(size);
    EXPECT_STATUS(fedotp_client_write_update(client, 1, message, size, &written),
                  FEDOTP_ERR_NOT_TRAINED);

    /* Training refusals change nothing. */
    FedotpTrainReport report;
    poison(&report, sizeof report);
    EXPECT_STATUS(fedotp_client_train(client, train, 0, NULL, NULL, NULL, &report),
                  FEDOTP_ERR_EMPTY_DIMENSION);
    EXPECT_STATUS(fedotp_client_train(client, empty, 1, NULL, NULL, NULL, &report),
                  FEDOTP_ERR_EMPTY_DIMENSION);
    EXPECT_STATUS(fedotp_client_train(client, unlabelled, 1, NULL, NULL, NULL, &report),
                  FEDOTP_ERR_INVALID_LABEL);
    EXPECT_MESSAGE("image 2 has no label");
    EXPECT_STATUS(fedotp_client_train(client, out_of_range, 1, NULL, NULL, NULL, &report),
                  FEDOTP_ERR_INVALID_LABEL);
    EXPECT_STATUS(fedotp_client_train(client, NULL, 1, NULL, NULL, NULL, &report),
                  FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_client_train(NULL, train, 1, NULL, NULL, NULL, &report),
                  FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_client_train(client, (FedotpImages *)client, 1, NULL, NULL, NULL, &report),
                  FEDOTP_ERR_WRONG_HANDLE_TYPE);
    uint32_t cancel = 0;
    EXPECT_STATUS(fedotp_client_train(client, train, 3, count_progress, &cancel, &cancel, &report),
                  FEDOTP_ERR_CANCELLED);
    CHECK(progress_seen == 1, "cancelled after step %g", progress_seen);
    CHECK(untouched(&report, sizeof report), "a failed training wrote its report");
    EXPECT_STATUS(fedotp_client_global_prompt(client, global, 2, 64), FEDOTP_OK);
    CHECK(memcmp(global, before, sizeof global) == 0, "a refused training changed the prompt");
    EXPECT_STATUS(fedotp_client_write_update(client, 1, message, size, &written),
                  FEDOTP_ERR_NOT_TRAINED);

    /* The callback may use other handles; the client and images the training holds are busy,
     * not a deadlock. */
    struct Reentry reentry = {client, train, model, 1, 1, 1, 1, 1};
    EXPECT_STATUS(fedotp_client_train(client, train, 1, call_back_in, &reentry, NULL, NULL),
                  FEDOTP_OK);
    CHECK(reentry.on_client == FEDOTP_ERR_HANDLE_BUSY, "client from the callback: %d",
          reentry.on_client);
    CHECK(reentry.on_images == FEDOTP_ERR_HANDLE_BUSY, "images from the callback: %d",
          reentry.on_images);
    CHECK(reentry.on_model == FEDOTP_OK, "model from the callback: %d", reentry.on_model);
    /* Freeing them from there is refused too, and frees nothing: both stay usable. */
    CHECK(reentry.freed_client == FEDOTP_ERR_HANDLE_BUSY, "client freed from the callback: %d",
          reentry.freed_client);
    CHECK(reentry.freed_images == FEDOTP_ERR_HANDLE_BUSY, "images freed from the callback: %d",
          reentry.freed_images);
    size_t still_there = 0;
    EXPECT_STATUS(fedotp_images_count(train, &still_there), FEDOTP_OK);
    EXPECT_STATUS(fedotp_client_global_prompt(client, before, 2, 64), FEDOTP_OK);

    /* A real training: 4 images in batches of 2, 2 epochs = 4 steps. */
    EXPECT_STATUS(fedotp_client_train(client, train, 2, NULL, NULL, NULL, &report), FEDOTP_OK);
    CHECK(report.steps == 4 && report.skipped_steps == 0, "steps %llu skipped %llu",
          (unsigned long long)report.steps, (unsigned long long)report.skipped_steps);
    CHECK(isfinite(report.loss) && report.loss > 0, "loss %g", report.loss);
    CHECK(report.accuracy >= 0 && report.accuracy <= 1, "accuracy %g", report.accuracy);
    EXPECT_STATUS(fedotp_client_global_prompt(client, global, 2, 64), FEDOTP_OK);
    CHECK(memcmp(global, before, sizeof global) != 0, "training changed the global prompt");
    EXPECT_STATUS(fedotp_client_train(client, train, 1, NULL, NULL, NULL, NULL), FEDOTP_OK);

    /* The update: refusals first, then the message decoded independently. */
    written = 4242;
    poison(message, size);
    EXPECT_STATUS(fedotp_client_write_update(client, 1, message, size - 1, &written),
                  FEDOTP_ERR_BUFFER_TOO_SMALL);
    EXPECT_STATUS(fedotp_client_write_update(client, 1, message, size, NULL),
                  FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_client_write_update(client, 1, NULL, size, &written),
                  FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_client_write_update(client, 1, message, SIZE_MAX, &written),
                  FEDOTP_ERR_SIZE_OVERFLOW);
    EXPECT_STATUS(fedotp_client_write_update(client, 1, message, size, (size_t *)(message + 8)),
                  FEDOTP_ERR_ALIASED_BUFFERS);
    CHECK(untouched(message, size) && written == 4242, "a failed update wrote");
    EXPECT_STATUS(fedotp_client_write_update(client, 9, message, size, &written), FEDOTP_OK);
    CHECK(written == size, "update of %zu bytes", written);
    float decoded[2 * 64];
    FedotpClientUpdateHeader header;
    EXPECT_STATUS(fedotp_client_update_decode(message, written, 2, 64, decoded, &header), FEDOTP_OK);
    EXPECT_STATUS(fedotp_client_global_prompt(client, global, 2, 64), FEDOTP_OK);
    CHECK(memcmp(decoded, global, sizeof global) == 0, "the update carries the global prompt");
    CHECK(header.round == 0 && header.client == 9 && header.samples == 4 && header.has_loss &&
              header.has_accuracy,
          "update header round %u client %u samples %u", header.round, header.client,
          header.samples);

    /* A global prompt from the server: malformed ones are refused, a good one installed. */
    float server[2 * 64];
    for (size_t i = 0; i < 2 * 64; i++) server[i] = 0.01f * (float)i - 0.3f;
    size_t global_size = 0;
    EXPECT_STATUS(fedotp_global_prompt_size(2, 64, &global_size), FEDOTP_OK);
    uint8_t *global_message = malloc(global_size);
    EXPECT_STATUS(fedotp_global_prompt_encode(5, server, 2, 64, global_message, global_size,
                                              &written),
                  FEDOTP_OK);
    uint32_t round = 77;
    EXPECT_STATUS(fedotp_client_read_global(client, global_message, global_size - 1, &round),
                  FEDOTP_ERR_MESSAGE_TRUNCATED);
    global_message[30] ^= 1;
    EXPECT_STATUS(fedotp_client_read_global(client, global_message, global_size, &round),
                  FEDOTP_ERR_CHECKSUM_MISMATCH);
    global_message[30] ^= 1;
    global_message[0] = 'X';
    EXPECT_STATUS(fedotp_client_read_global(client, global_message, global_size, &round),
                  FEDOTP_ERR_BAD_MAGIC);
    global_message[0] = 'F';
    EXPECT_STATUS(fedotp_client_read_global(client, message, size, &round), FEDOTP_ERR_WRONG_KIND);
    EXPECT_STATUS(fedotp_client_read_global(other, global_message, global_size, &round),
                  FEDOTP_ERR_SHAPE_MISMATCH);
    EXPECT_STATUS(fedotp_client_read_global(client, global_message, 0, &round),
                  FEDOTP_ERR_MESSAGE_TRUNCATED);
    EXPECT_STATUS(fedotp_client_read_global(client, global_message, SIZE_MAX, &round),
                  FEDOTP_ERR_SIZE_OVERFLOW);
    EXPECT_STATUS(fedotp_client_read_global(client, NULL, global_size, &round),
                  FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_client_read_global(client, global_message, global_size,
                                            (uint32_t *)global_message),
                  FEDOTP_ERR_ALIASED_BUFFERS);
    CHECK(round == 77, "a refused message wrote its round");
    float unchanged[2 * 64];
    EXPECT_STATUS(fedotp_client_global_prompt(client, unchanged, 2, 64), FEDOTP_OK);
    CHECK(memcmp(unchanged, global, sizeof global) == 0, "a refused message changed the prompt");
    EXPECT_STATUS(fedotp_client_read_global(client, global_message, global_size, &round),
                  FEDOTP_OK);
    CHECK(round == 5, "installed round %u", round);
    EXPECT_STATUS(fedotp_client_global_prompt(client, global, 2, 64), FEDOTP_OK);
    CHECK(memcmp(global, server, sizeof global) == 0, "the server's prompt is installed");
    EXPECT_STATUS(fedotp_client_write_update(client, 9, message, size, &written),
                  FEDOTP_ERR_NOT_TRAINED);
    EXPECT_STATUS(fedotp_client_train(client, train, 1, NULL, NULL, NULL, NULL), FEDOTP_OK);
    EXPECT_STATUS(fedotp_client_write_update(client, 9, message, size, &written), FEDOTP_OK);
    EXPECT_STATUS(fedotp_client_update_decode(message, written, 2, 64, decoded, &header), FEDOTP_OK);
    CHECK(header.round == 5, "the update belongs to the installed round, got %u", header.round);

    /* Prediction. */
    float probabilities[5 * 2];
    poison(probabilities, sizeof probabilities);
    EXPECT_STATUS(fedotp_client_predict(client, unlabelled, probabilities, 5),
                  FEDOTP_ERR_BUFFER_TOO_SMALL);
    EXPECT_STATUS(fedotp_client_predict(client, empty, probabilities, 10),
                  FEDOTP_ERR_EMPTY_DIMENSION);
    EXPECT_STATUS(fedotp_client_predict(client, unlabelled, NULL, 6), FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_client_predict(client, unlabelled, probabilities, SIZE_MAX),
                  FEDOTP_ERR_SIZE_OVERFLOW);
    EXPECT_STATUS(fedotp_client_predict(client, NULL, probabilities, 6), FEDOTP_ERR_NULL_POINTER);
    CHECK(untouched(probabilities, sizeof probabilities), "a failed prediction wrote");
    EXPECT_STATUS(fedotp_client_predict(client, unlabelled, probabilities, 10), FEDOTP_OK);
    for (size_t row = 0; row < 3; row++) {
        float sum = probabilities[2 * row] + probabilities[2 * row + 1];
        CHECK(fabsf(sum - 1) < 1e-5f && probabilities[2 * row] >= 0, "row %zu sums to %g", row,
              sum);
    }
    CHECK(untouched(probabilities + 6, 4 * sizeof(float)), "prediction wrote past 3 x 2 floats");

    /* One picture in five formats predicts identically: 8-bit gray, the same levels as RGB rows
     * with padding, 16-bit gray over the full range (v * 257), 16-bit gray through the window
     * centre 128, width 256, which maps v to v / 255, and those 16-bit values as a PNG file
     * through the same window. */
    {
        FedotpImages *same = NULL;
        EXPECT_STATUS(fedotp_images_new(&same), FEDOTP_OK);
        uint8_t gray[5 * 3], rgb[3 * (5 * 3 + 2)];
        uint16_t full[5 * 3], windowed[5 * 3];
        for (size_t i = 0; i < 15; i++) {
            gray[i] = (uint8_t)(17 * i);
            full[i] = (uint16_t)(257 * gray[i]);
            windowed[i] = gray[i];
        }
        for (size_t y = 0; y < 3; y++)
            for (size_t x = 0; x < 5; x++)
                for (size_t c = 0; c < 3; c++) rgb[y * 17 + 3 * x + c] = gray[y * 5 + x];
        FedotpGrayWindow identity = {128.0, 256.0};
        EXPECT_STATUS(fedotp_images_add_gray8(same, gray, 5, 3, 5, 0), FEDOTP_OK);
        EXPECT_STATUS(fedotp_images_add_rgb8(same, rgb, 5, 3, 17, 0), FEDOTP_OK);
        EXPECT_STATUS(fedotp_images_add_gray16(same, full, 5, 3, 5, NULL, 0), FEDOTP_OK);
        EXPECT_STATUS(fedotp_images_add_gray16(same, windowed, 5, 3, 5, &identity, 0), FEDOTP_OK);
        EXPECT_STATUS(fedotp_images_add_encoded_windowed(same, PNG16_5x3, sizeof PNG16_5x3, 0,
                                                         &identity),
                      FEDOTP_OK);
        float rows[5 * 2];
        EXPECT_STATUS(fedotp_client_predict(client, same, rows, 10), FEDOTP_OK);
        for (size_t row = 1; row < 5; row++)
            CHECK(memcmp(rows, rows + 2 * row, 2 * sizeof(float)) == 0,
                  "format %zu predicts (%g, %g), gray8 (%g, %g)", row, rows[2 * row],
                  rows[2 * row + 1], rows[0], rows[1]);
        EXPECT_STATUS(fedotp_images_free(same), FEDOTP_OK);
    }

    /* Saved states. */
    const char *state = FEDOTP_SCRATCH_DIR "/client_api_state.safetensors";
    EXPECT_STATUS(fedotp_client_save(client, state), FEDOTP_OK);
    EXPECT_STATUS(fedotp_client_save(client, FEDOTP_SCRATCH_DIR "/no/such/dir/state"),
                  FEDOTP_ERR_IO);
    EXPECT_STATUS(fedotp_client_save(client, NULL), FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_client_save(FORGED(FedotpClient), state), FEDOTP_ERR_INVALID_HANDLE);
    EXPECT_STATUS(fedotp_client_load(other, state), FEDOTP_ERR_STATE_MISMATCH);
    FedotpClient *renamed = NULL;
    const char *other_classes[] = {"bright", "dark"};
    config.n_ctx = 2;
    EXPECT_STATUS(fedotp_client_new(model, other_classes, 2, &config, &renamed), FEDOTP_OK);
    EXPECT_STATUS(fedotp_client_load(renamed, state), FEDOTP_ERR_STATE_MISMATCH);
    EXPECT_STATUS(fedotp_client_load(renamed, FEDOTP_SOURCE_DIR
                                     "/host/tests/fixtures/clip/hf/model.safetensors"),
                  FEDOTP_ERR_STATE_FORMAT);
    EXPECT_STATUS(fedotp_client_load(renamed, FEDOTP_SOURCE_DIR "/host/tests/fixtures/clip/hf/config.json"),
                  FEDOTP_ERR_STATE_FORMAT);
    EXPECT_STATUS(fedotp_client_load(renamed, FEDOTP_SCRATCH_DIR "/missing.safetensors"),
                  FEDOTP_ERR_IO);
    EXPECT_STATUS(fedotp_client_load(renamed, NULL), FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_client_free(renamed), FEDOTP_OK);
    /* Same architecture, classes and n_ctx, other weights: prompts learned for another model. */
    FedotpModel *sibling = NULL;
    FedotpClient *on_sibling = NULL;
    EXPECT_STATUS(fedotp_model_new_tiny(4, &sibling), FEDOTP_OK);
    EXPECT_STATUS(fedotp_client_new(sibling, CLASSES, 2, &config, &on_sibling), FEDOTP_OK);
    EXPECT_STATUS(fedotp_client_load(on_sibling, state), FEDOTP_ERR_STATE_MISMATCH);
    EXPECT_MESSAGE("other weights");
    EXPECT_STATUS(fedotp_client_free(on_sibling), FEDOTP_OK);
    EXPECT_STATUS(fedotp_model_free(sibling), FEDOTP_OK);

    FedotpClient *restarted = NULL;
    config.seed = 12345;
    EXPECT_STATUS(fedotp_client_new(model, CLASSES, 2, &config, &restarted), FEDOTP_OK);
    /* A state with a NaN in a prompt or in the optimiser's momentum is refused, naming the
     * tensor, and the client is unchanged. */
    {
        const char *tensors[] = {"global_prompt", "client.0.local_prompt",
                                 "client.0.momentum_buffer"};
        const char *poisoned = FEDOTP_SCRATCH_DIR "/client_api_nan_state.safetensors";
        float fresh[2 * 64], after[2 * 64];
        EXPECT_STATUS(fedotp_client_global_prompt(restarted, fresh, 2, 64), FEDOTP_OK);
        for (size_t t = 0; t < sizeof tensors / sizeof tensors[0]; t++) {
            write_with_nan(state, poisoned, tensors[t]);
            EXPECT_STATUS(fedotp_client_load(restarted, poisoned), FEDOTP_ERR_NON_FINITE);
            EXPECT_MESSAGE(tensors[t]);
        }
        EXPECT_STATUS(fedotp_client_global_prompt(restarted, after, 2, 64), FEDOTP_OK);
        CHECK(memcmp(fresh, after, sizeof fresh) == 0, "a refused load changed the prompt");
        remove(poisoned);
    }
    EXPECT_STATUS(fedotp_client_load(restarted, state), FEDOTP_OK);
    float reloaded[5 * 2];
    EXPECT_STATUS(fedotp_client_predict(restarted, unlabelled, reloaded, 10), FEDOTP_OK);
    CHECK(memcmp(reloaded, probabilities, 6 * sizeof(float)) == 0,
          "the reloaded client predicts as the saved one");
    EXPECT_STATUS(fedotp_client_global_prompt(restarted, unchanged, 2, 64), FEDOTP_OK);
    EXPECT_STATUS(fedotp_client_global_prompt(client, global, 2, 64), FEDOTP_OK);
    CHECK(memcmp(unchanged, global, sizeof global) == 0, "the saved global prompt is restored");
    EXPECT_STATUS(fedotp_client_write_update(restarted, 9, message, size, &written),
                  FEDOTP_ERR_NOT_TRAINED);
    /* Training on from the saved state follows the saved generator: both give the same. */
    EXPECT_STATUS(fedotp_client_train(restarted, train, 1, NULL, NULL, NULL, &report), FEDOTP_OK);
    FedotpTrainReport original;
    EXPECT_STATUS(fedotp_client_train(client, train, 1, NULL, NULL, NULL, &original), FEDOTP_OK);
    CHECK(report.loss == original.loss, "resumed training differs: %g vs %g", report.loss,
          original.loss);

    free(message);
    free(global_message);
    EXPECT_STATUS(fedotp_client_free(restarted), FEDOTP_OK);
    EXPECT_STATUS(fedotp_client_free(other), FEDOTP_OK);
    EXPECT_STATUS(fedotp_client_free(client), FEDOTP_OK);
    EXPECT_STATUS(fedotp_client_free(client), FEDOTP_ERR_INVALID_HANDLE);
    EXPECT_STATUS(fedotp_client_train(client, train, 1, NULL, NULL, NULL, NULL),
                  FEDOTP_ERR_INVALID_HANDLE);
    EXPECT_STATUS(fedotp_client_predict(client, train, probabilities, 10),
                  FEDOTP_ERR_INVALID_HANDLE);
    EXPECT_STATUS(fedotp_client_free((FedotpClient *)train), FEDOTP_ERR_WRONG_HANDLE_TYPE);
    EXPECT_STATUS(fedotp_client_free(NULL), FEDOTP_OK);
    EXPECT_STATUS(fedotp_images_free(train), FEDOTP_OK);
    EXPECT_STATUS(fedotp_images_free(empty), FEDOTP_OK);
    EXPECT_STATUS(fedotp_images_free(unlabelled), FEDOTP_OK);
    EXPECT_STATUS(fedotp_images_free(out_of_range), FEDOTP_OK);
}

int main(void) {
    check_status_names(NEW_STATUSES, sizeof NEW_STATUSES / sizeof NEW_STATUSES[0]);
    version_and_devices();
    models();
    image_sets();
    FedotpModel *model = NULL;
    EXPECT_STATUS(fedotp_model_new_tiny(3, &model), FEDOTP_OK);
    client_creation(model);
    training_exchange_prediction(model);
    EXPECT_STATUS(fedotp_model_free(model), FEDOTP_OK);
    CHECK(live_handles() == 0, "%zu handles left", live_handles());
    return report("client API");
}
