/* Calls every wire-format and aggregator function of libfedotp from C, the error paths included:
 * the documented example messages byte for byte, round trips, every defect a message can have,
 * a FedAvg round against a hand-computed weighted mean, every refusal leaving the aggregate
 * unchanged, NULL / freed / forged handles, and one aggregator fed from eight threads.
 * Exits non-zero if any check fails. Built and run by ffi/tests/c_program.rs. */
#define _POSIX_C_SOURCE 200809L

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "check.h"

/* ---- helpers ---------------------------------------------------------------------------- */

/* zlib's crc32 (CRC-32/ISO-HDLC), bit by bit: an implementation independent of libfedotp's. */
static uint32_t crc32_of(const uint8_t *bytes, size_t len) {
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < len; i++) {
        crc ^= bytes[i];
        for (int bit = 0; bit < 8; bit++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

static void put_u32(uint8_t *at, uint32_t value) {
    for (int i = 0; i < 4; i++) at[i] = (uint8_t)(value >> (8 * i));
}

static void put_f32(uint8_t *at, float value) {
    uint32_t bits;
    memcpy(&bits, &value, 4);
    put_u32(at, bits);
}

/* Rewrites the trailing checksum, so that a defect behind it is what the decoder reports. */
static void reseal(uint8_t *message, size_t len) {
    put_u32(message + len - 4, crc32_of(message, len - 4));
}

/* ---- the worked examples of docs/PROTOCOL.md §5 ---------------------------------------- */

static const float EXAMPLE_PROMPT[4] = {1.0f, -0.5f, 0.25f, 2.0f}; /* 2 x 2, row-major */

static const uint8_t EXAMPLE_UPDATE[60] = {
    0x46, 0x4f, 0x54, 0x50, 0x01, 0x00, 0x02, 0x03, 0x3c, 0x00, 0x00, 0x00, /* FOTP v1 kind 2 */
    0x03, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, /* round, 2 x 2 */
    0x07, 0x00, 0x00, 0x00, 0x78, 0x00, 0x00, 0x00,                         /* client, samples */
    0x00, 0x00, 0x00, 0x3f, 0x00, 0x00, 0x40, 0x3f,                         /* loss, accuracy */
    0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xbf, 0x00, 0x00, 0x80, 0x3e, 0x00, 0x00, 0x00, 0x40,
    0x8d, 0x83, 0x16, 0x29}; /* CRC-32 */

static const uint8_t EXAMPLE_GLOBAL[44] = {
    0x46, 0x4f, 0x54, 0x50, 0x01, 0x00, 0x01, 0x00, 0x2c, 0x00, 0x00, 0x00, /* FOTP v1 kind 1 */
    0x03, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, /* round, 2 x 2 */
    0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xbf, 0x00, 0x00, 0x80, 0x3e, 0x00, 0x00, 0x00, 0x40,
    0xff, 0x21, 0xed, 0x12}; /* CRC-32 */

/* ---- sizes ------------------------------------------------------------------------------- */

typedef int32_t (*size_fn)(size_t n_ctx, size_t width, size_t *size_out);

static void sizes(void) {
    size_t size = 0;
    EXPECT_STATUS(fedotp_client_update_size(2, 2, &size), FEDOTP_OK);
    CHECK(size == sizeof EXAMPLE_UPDATE, "client update size %zu", size);
    EXPECT_STATUS(fedotp_global_prompt_size(2, 2, &size), FEDOTP_OK);
    CHECK(size == sizeof EXAMPLE_GLOBAL, "global prompt size %zu", size);
    EXPECT_STATUS(fedotp_client_update_size(4, 512, &size), FEDOTP_OK);
    CHECK(size == 8236, "4 x 512 client update size %zu", size);
    EXPECT_STATUS(fedotp_global_prompt_size(4, 512, &size), FEDOTP_OK);
    CHECK(size == 8220, "4 x 512 global prompt size %zu", size);
    /* The largest prompt the format carries: FEDOTP_MAX_PROMPT_LEN = 2^24 floats. */
    EXPECT_STATUS(fedotp_client_update_size(4096, 4096, &size), FEDOTP_OK);
    CHECK(size == ((size_t)1 << 26) + 44, "largest client update size %zu", size);

    const size_fn functions[2] = {fedotp_client_update_size, fedotp_global_prompt_size};
    for (int f = 0; f < 2; f++) {
        size = 77;
        EXPECT_STATUS(functions[f](2, 2, NULL), FEDOTP_ERR_NULL_POINTER);
        EXPECT_MESSAGE("size_out");
        EXPECT_STATUS(functions[f](0, 2, &size), FEDOTP_ERR_EMPTY_DIMENSION);
        EXPECT_MESSAGE("n_ctx");
        EXPECT_STATUS(functions[f](2, 0, &size), FEDOTP_ERR_EMPTY_DIMENSION);
        EXPECT_MESSAGE("width");
        EXPECT_STATUS(functions[f](SIZE_MAX, 2, &size), FEDOTP_ERR_SIZE_OVERFLOW);
        EXPECT_STATUS(functions[f]((size_t)1 << 40, (size_t)1 << 40, &size),
                      FEDOTP_ERR_SIZE_OVERFLOW);
        EXPECT_STATUS(functions[f](4097, 4096, &size), FEDOTP_ERR_TOO_LARGE);
        EXPECT_MESSAGE("FEDOTP_MAX_PROMPT_LEN");
        EXPECT_STATUS(functions[f](FEDOTP_MAX_PROMPT_LEN + 1, 1, &size), FEDOTP_ERR_TOO_LARGE);
        EXPECT_STATUS(functions[f]((size_t)1 << 32, 1, &size), FEDOTP_ERR_TOO_LARGE);
        CHECK(size == 77, "size written on error");
    }
}

/* ---- encoding ---------------------------------------------------------------------------- */

static void examples_byte_for_byte(void) {
    /* The examples' checksums are zlib's crc32 as computed here, independently. */
    CHECK(crc32_of(EXAMPLE_UPDATE, 56) == 0x2916838du, "example update CRC");
    CHECK(crc32_of(EXAMPLE_GLOBAL, 40) == 0x12ed21ffu, "example global CRC");

    uint8_t out[sizeof EXAMPLE_UPDATE];
    size_t written = 0;
    const float loss = 0.5f, accuracy = 0.75f;
    EXPECT_STATUS(fedotp_client_update_encode(3, 7, 120, EXAMPLE_PROMPT, 2, 2, &loss, &accuracy,
                                              out, sizeof out, &written),
                  FEDOTP_OK);
    CHECK(written == sizeof EXAMPLE_UPDATE, "wrote %zu bytes", written);
    CHECK(memcmp(out, EXAMPLE_UPDATE, sizeof out) == 0, "client update differs from the example");
    CHECK(strcmp(fedotp_last_error_message(), "") == 0, "last error not cleared");

    EXPECT_STATUS(
        fedotp_global_prompt_encode(3, EXAMPLE_PROMPT, 2, 2, out, sizeof out, &written),
        FEDOTP_OK);
    CHECK(written == sizeof EXAMPLE_GLOBAL, "wrote %zu bytes", written);
    CHECK(memcmp(out, EXAMPLE_GLOBAL, sizeof EXAMPLE_GLOBAL) == 0,
          "global prompt differs from the example");
}

static void encode_writes_only_the_message(void) {
    /* A buffer larger than the message: its tail is neither written nor read. */
    uint8_t out[sizeof EXAMPLE_UPDATE + 16];
    poison(out, sizeof out);
    size_t written = 0;
    EXPECT_STATUS(fedotp_client_update_encode(3, 7, 120, EXAMPLE_PROMPT, 2, 2, NULL, NULL, out,
                                              sizeof out, &written),
                  FEDOTP_OK);
    CHECK(written == sizeof EXAMPLE_UPDATE, "wrote %zu bytes", written);
    CHECK(untouched(out + written, sizeof out - written), "bytes past the message written");
    CHECK(out[7] == 0, "flags %u without metrics", out[7]);
    /* A capacity far beyond the buffer is fine too: only the message's bytes are touched. */
    EXPECT_STATUS(fedotp_global_prompt_encode(3, EXAMPLE_PROMPT, 2, 2, out, SIZE_MAX, &written),
                  FEDOTP_OK);
    CHECK(written == sizeof EXAMPLE_GLOBAL, "wrote %zu bytes", written);
}

static void client_update_encode_errors_write_nothing(void) {
    /* `backing` lets the aliasing cases point outputs into each other, suitably aligned. */
    static size_t backing[32];
    uint8_t *out = (uint8_t *)backing;
    const size_t capacity = sizeof backing;
    size_t written = 99;
    const float loss = 0.5f, accuracy = 0.75f, nan = NAN, inf = INFINITY;
    const float too_high = 1.5f, negative = -0.25f;
    float prompt[4] = {1.0f, -0.5f, NAN, 2.0f};
    poison(backing, sizeof backing);

#define ENCODE(prompt_, n_ctx_, width_, loss_, accuracy_, out_, capacity_, written_) \
    fedotp_client_update_encode(3, 7, 120, prompt_, n_ctx_, width_, loss_, accuracy_, out_,  \
                                capacity_, written_)
    EXPECT_STATUS(ENCODE(NULL, 2, 2, &loss, &accuracy, out, capacity, &written),
                  FEDOTP_ERR_NULL_POINTER);
    EXPECT_MESSAGE("prompt");
    EXPECT_STATUS(ENCODE(EXAMPLE_PROMPT, 2, 2, &loss, &accuracy, NULL, capacity, &written),
                  FEDOTP_ERR_NULL_POINTER);
    EXPECT_MESSAGE("out");
    EXPECT_STATUS(ENCODE(EXAMPLE_PROMPT, 2, 2, &loss, &accuracy, out, capacity, NULL),
                  FEDOTP_ERR_NULL_POINTER);
    EXPECT_MESSAGE("written_out");
    EXPECT_STATUS(ENCODE(EXAMPLE_PROMPT, 2, 2, &loss, &accuracy, out, 59, &written),
                  FEDOTP_ERR_BUFFER_TOO_SMALL);
    EXPECT_MESSAGE("60");
    EXPECT_STATUS(ENCODE(EXAMPLE_PROMPT, 2, 2, &loss, &accuracy, out, 0, &written),
                  FEDOTP_ERR_BUFFER_TOO_SMALL);
    EXPECT_STATUS(ENCODE(prompt, 2, 2, &loss, &accuracy, out, capacity, &written),
                  FEDOTP_ERR_NON_FINITE);
    EXPECT_MESSAGE("prompt element 2");
    prompt[2] = 0.25f;
    prompt[3] = -INFINITY;
    EXPECT_STATUS(ENCODE(prompt, 2, 2, &loss, &accuracy, out, capacity, &written),
                  FEDOTP_ERR_NON_FINITE);
    EXPECT_MESSAGE("prompt element 3");
    EXPECT_STATUS(ENCODE(EXAMPLE_PROMPT, 2, 2, &inf, &accuracy, out, capacity, &written),
                  FEDOTP_ERR_NON_FINITE);
    EXPECT_MESSAGE("loss");
    EXPECT_STATUS(ENCODE(EXAMPLE_PROMPT, 2, 2, &loss, &nan, out, capacity, &written),
                  FEDOTP_ERR_NON_FINITE);
    EXPECT_MESSAGE("accuracy");
    EXPECT_STATUS(ENCODE(EXAMPLE_PROMPT, 2, 2, &loss, &too_high, out, capacity, &written),
                  FEDOTP_ERR_ACCURACY_OUT_OF_RANGE);
    EXPECT_STATUS(ENCODE(EXAMPLE_PROMPT, 2, 2, NULL, &negative, out, capacity, &written),
                  FEDOTP_ERR_ACCURACY_OUT_OF_RANGE);
    EXPECT_STATUS(ENCODE(EXAMPLE_PROMPT, 0, 2, &loss, &accuracy, out, capacity, &written),
                  FEDOTP_ERR_EMPTY_DIMENSION);
    EXPECT_STATUS(ENCODE(EXAMPLE_PROMPT, 2, SIZE_MAX, &loss, &accuracy, out, capacity, &written),
                  FEDOTP_ERR_SIZE_OVERFLOW);
    EXPECT_STATUS(ENCODE(EXAMPLE_PROMPT, 4097, 4096, &loss, &accuracy, out, capacity, &written),
                  FEDOTP_ERR_TOO_LARGE);
    CHECK(untouched(backing, sizeof backing), "out written on error");
    CHECK(written == 99, "written_out written on error");

    /* Outputs overlapping inputs or each other. */
    _Alignas(size_t) float shared[32] = {1.0f, -0.5f, 0.25f, 2.0f};
    EXPECT_STATUS(ENCODE(shared, 2, 2, &loss, &accuracy, (uint8_t *)(shared + 3), 100, &written),
                  FEDOTP_ERR_ALIASED_BUFFERS);
    EXPECT_MESSAGE("prompt");
    EXPECT_STATUS(ENCODE(EXAMPLE_PROMPT, 2, 2, &loss, &accuracy, out, capacity, &backing[3]),
                  FEDOTP_ERR_ALIASED_BUFFERS);
    EXPECT_STATUS(ENCODE(shared, 2, 2, &loss, &accuracy, out, capacity, (size_t *)(shared + 2)),
                  FEDOTP_ERR_ALIASED_BUFFERS);
    CHECK(shared[3] == 2.0f && shared[2] == 0.25f, "prompt written on error");
    CHECK(untouched(backing, sizeof backing), "out written on error");
    CHECK(written == 99, "written_out written on error");
#undef ENCODE
}

static void global_prompt_encode_errors_write_nothing(void) {
    static size_t backing[32];
    uint8_t *out = (uint8_t *)backing;
    size_t written = 99;
    const float bad[4] = {1.0f, NAN, 0.25f, 2.0f};
    poison(backing, sizeof backing);
    EXPECT_STATUS(fedotp_global_prompt_encode(1, NULL, 2, 2, out, 44, &written),
                  FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_global_prompt_encode(1, EXAMPLE_PROMPT, 2, 2, NULL, 44, &written),
                  FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_global_prompt_encode(1, EXAMPLE_PROMPT, 2, 2, out, 44, NULL),
                  FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_global_prompt_encode(1, EXAMPLE_PROMPT, 2, 2, out, 43, &written),
                  FEDOTP_ERR_BUFFER_TOO_SMALL);
    EXPECT_MESSAGE("44");
    EXPECT_STATUS(fedotp_global_prompt_encode(1, bad, 2, 2, out, 44, &written),
                  FEDOTP_ERR_NON_FINITE);
    EXPECT_MESSAGE("prompt element 1");
    EXPECT_STATUS(fedotp_global_prompt_encode(1, EXAMPLE_PROMPT, 2, 0, out, 44, &written),
                  FEDOTP_ERR_EMPTY_DIMENSION);
    EXPECT_STATUS(fedotp_global_prompt_encode(1, EXAMPLE_PROMPT, SIZE_MAX, SIZE_MAX, out, 44,
                                              &written),
                  FEDOTP_ERR_SIZE_OVERFLOW);
    EXPECT_STATUS(
        fedotp_global_prompt_encode(1, EXAMPLE_PROMPT, FEDOTP_MAX_PROMPT_LEN, 2, out, 44, &written),
        FEDOTP_ERR_TOO_LARGE);
    float shared[32] = {1.0f, -0.5f, 0.25f, 2.0f};
    EXPECT_STATUS(
        fedotp_global_prompt_encode(1, shared, 2, 2, (uint8_t *)(shared + 1), 100, &written),
        FEDOTP_ERR_ALIASED_BUFFERS);
    EXPECT_STATUS(fedotp_global_prompt_encode(1, EXAMPLE_PROMPT, 2, 2, out, 44, &backing[1]),
                  FEDOTP_ERR_ALIASED_BUFFERS);
    CHECK(untouched(backing, sizeof backing), "out written on error");
    CHECK(written == 99, "written_out written on error");
}

/* ---- decoding ---------------------------------------------------------------------------- */

static void round_trips(void) {
    /* The examples decode to what they say. */
    float prompt[4];
    FedotpClientUpdateHeader header;
    EXPECT_STATUS(fedotp_client_update_decode(EXAMPLE_UPDATE, sizeof EXAMPLE_UPDATE, 2, 2, prompt,
                                              &header),
                  FEDOTP_OK);
    CHECK(memcmp(prompt, EXAMPLE_PROMPT, sizeof prompt) == 0, "decoded prompt");
    CHECK(header.round == 3 && header.client == 7 && header.samples == 120, "header %u %u %u",
          header.round, header.client, header.samples);
    CHECK(header.has_loss == 1 && header.loss == 0.5f, "loss %u %g", header.has_loss, header.loss);
    CHECK(header.has_accuracy == 1 && header.accuracy == 0.75f, "accuracy %u %g",
          header.has_accuracy, header.accuracy);
    uint32_t round = 0;
    EXPECT_STATUS(fedotp_global_prompt_decode(EXAMPLE_GLOBAL, sizeof EXAMPLE_GLOBAL, 2, 2, prompt,
                                              &round),
                  FEDOTP_OK);
    CHECK(round == 3 && memcmp(prompt, EXAMPLE_PROMPT, sizeof prompt) == 0, "global round %u",
          round);

    /* A FedOTP-sized prompt with awkward values survives bit for bit, metrics absent or not. */
    enum { N_CTX = 4, WIDTH = 512, LEN = N_CTX * WIDTH };
    static float sent[LEN], received[LEN];
    static uint8_t message[4 * LEN + 44];
    for (int i = 0; i < LEN; i++) sent[i] = sinf((float)i) * powf(10.0f, (float)(i % 13 - 6));
    sent[0] = -0.0f;
    sent[1] = FLT_MIN / 4; /* subnormal */
    sent[2] = FLT_MAX;
    sent[3] = -FLT_MAX;
    size_t written = 0;
    const float loss = 2.25f;
    EXPECT_STATUS(fedotp_client_update_encode(41, 0xFFFFFFFFu, 0xFFFFFFFFu, sent, N_CTX, WIDTH,
                                              &loss, NULL, message, sizeof message, &written),
                  FEDOTP_OK);
    CHECK(written == sizeof message, "wrote %zu", written);
    EXPECT_STATUS(
        fedotp_client_update_decode(message, written, N_CTX, WIDTH, received, &header),
        FEDOTP_OK);
    CHECK(memcmp(sent, received, sizeof sent) == 0, "prompt changed in a round trip");
    CHECK(header.round == 41 && header.client == 0xFFFFFFFFu && header.samples == 0xFFFFFFFFu,
          "header %u %u %u", header.round, header.client, header.samples);
    CHECK(header.has_loss == 1 && header.loss == 2.25f && header.has_accuracy == 0 &&
              header.accuracy == 0.0f,
          "metrics %u %g %u %g", header.has_loss, header.loss, header.has_accuracy,
          header.accuracy);

    EXPECT_STATUS(fedotp_global_prompt_encode(0, sent, N_CTX, WIDTH, message, sizeof message,
                                              &written),
                  FEDOTP_OK);
    CHECK(written == sizeof message - 16, "wrote %zu", written);
    memset(received, 0, sizeof received);
    EXPECT_STATUS(
        fedotp_global_prompt_decode(message, written, N_CTX, WIDTH, received, &round),
        FEDOTP_OK);
    CHECK(round == 0 && memcmp(sent, received, sizeof sent) == 0, "global round trip");
}

/* Decodes `message` as a 2 x 2 client update (or `n_ctx` x `width`), expecting `status`, a last
 * error that mentions `detail`, and nothing written. */
static void expect_update_refused(const uint8_t *message, size_t len, size_t n_ctx, size_t width,
                                  int32_t status, const char *detail, int line) {
    float prompt[64];
    FedotpClientUpdateHeader header;
    poison(prompt, sizeof prompt);
    poison(&header, sizeof header);
    int32_t got = fedotp_client_update_decode(message, len, n_ctx, width, prompt, &header);
    CHECK(got == status, "line %d: decode returned %d (%s: %s), expected %d", line, got,
          fedotp_status_str(got), fedotp_last_error_message(), status);
    CHECK(strstr(fedotp_last_error_message(), detail) != NULL,
          "line %d: last error \"%s\" lacks \"%s\"", line, fedotp_last_error_message(), detail);
    CHECK(untouched(prompt, sizeof prompt) && untouched(&header, sizeof header),
          "line %d: output written on error", line);
}

#define EXPECT_UPDATE_REFUSED(message, len, status, detail) \
    expect_update_refused(message, len, 2, 2, status, detail, __LINE__)

static void client_update_decode_names_every_defect(void) {
    uint8_t m[sizeof EXAMPLE_UPDATE + 4];
#define FRESH() (memcpy(m, EXAMPLE_UPDATE, sizeof EXAMPLE_UPDATE), m[60] = 0)

    FRESH();
    EXPECT_UPDATE_REFUSED(m, 0, FEDOTP_ERR_MESSAGE_TRUNCATED, "truncated");
    EXPECT_UPDATE_REFUSED(m, 23, FEDOTP_ERR_MESSAGE_TRUNCATED, "23 bytes");
    EXPECT_UPDATE_REFUSED(m, 59, FEDOTP_ERR_MESSAGE_TRUNCATED, "60");
    EXPECT_UPDATE_REFUSED(m, 61, FEDOTP_ERR_TRAILING_BYTES, "61");
    FRESH(), m[0] ^= 0x01;
    EXPECT_UPDATE_REFUSED(m, 60, FEDOTP_ERR_BAD_MAGIC, "magic");
    FRESH(), m[4] = 2;
    EXPECT_UPDATE_REFUSED(m, 60, FEDOTP_ERR_UNSUPPORTED_VERSION, "version");
    FRESH(), m[6] = 3;
    EXPECT_UPDATE_REFUSED(m, 60, FEDOTP_ERR_UNKNOWN_KIND, "kind");
    EXPECT_UPDATE_REFUSED(EXAMPLE_GLOBAL, sizeof EXAMPLE_GLOBAL, FEDOTP_ERR_WRONG_KIND,
                          "global prompt");
    FRESH(), put_u32(m + 8, 8);
    EXPECT_UPDATE_REFUSED(m, 60, FEDOTP_ERR_LENGTH_MISMATCH, "offset 8");
    FRESH(), put_u32(m + 8, 64);
    EXPECT_UPDATE_REFUSED(m, 60, FEDOTP_ERR_MESSAGE_TRUNCATED, "64");

    /* A byte corrupted in transit anywhere from offset 12 on, checksum included, is caught by
       the checksum before any field behind it is believed. */
    for (size_t offset = 12; offset < 60; offset++) {
        for (int bit = 0; bit < 8; bit += 3) {
            FRESH(), m[offset] ^= (uint8_t)(1u << bit);
            EXPECT_UPDATE_REFUSED(m, 60, FEDOTP_ERR_CHECKSUM_MISMATCH, "checksum");
        }
    }

    /* Defects behind a valid checksum: the sender's doing, each named. */
    FRESH(), m[7] |= 0x04, reseal(m, 60);
    EXPECT_UPDATE_REFUSED(m, 60, FEDOTP_ERR_RESERVED_NOT_ZERO, "offset 7");
    FRESH(), m[7] = 0x02, reseal(m, 60); /* loss absent, but its field holds 0.5 */
    EXPECT_UPDATE_REFUSED(m, 60, FEDOTP_ERR_RESERVED_NOT_ZERO, "offset 32");
    FRESH(), put_u32(m + 16, 3), reseal(m, 60); /* n_ctx 3: 3 x 2 needs 68 bytes */
    EXPECT_UPDATE_REFUSED(m, 60, FEDOTP_ERR_LENGTH_MISMATCH, "68");
    FRESH(), put_u32(m + 16, 1), put_u32(m + 20, 4), reseal(m, 60); /* 1 x 4: same length */
    EXPECT_UPDATE_REFUSED(m, 60, FEDOTP_ERR_SHAPE_MISMATCH, "1×4");
    FRESH();
    expect_update_refused(m, 60, 2, 3, FEDOTP_ERR_SHAPE_MISMATCH, "2×3", __LINE__);
    expect_update_refused(m, 60, 4, 1, FEDOTP_ERR_SHAPE_MISMATCH, "4×1", __LINE__);
    FRESH(), put_f32(m + 32, NAN), reseal(m, 60);
    EXPECT_UPDATE_REFUSED(m, 60, FEDOTP_ERR_NON_FINITE, "loss");
    FRESH(), put_f32(m + 36, INFINITY), reseal(m, 60);
    EXPECT_UPDATE_REFUSED(m, 60, FEDOTP_ERR_NON_FINITE, "accuracy");
    FRESH(), put_f32(m + 36, 75.0f), reseal(m, 60); /* a percentage, not a fraction */
    EXPECT_UPDATE_REFUSED(m, 60, FEDOTP_ERR_ACCURACY_OUT_OF_RANGE, "75");
    FRESH(), put_f32(m + 48, -INFINITY), reseal(m, 60);
    EXPECT_UPDATE_REFUSED(m, 60, FEDOTP_ERR_NON_FINITE, "prompt element 2");

    /* The caller's arguments. */
    FRESH();
    float prompt[4];
    FedotpClientUpdateHeader header;
    EXPECT_STATUS(fedotp_client_update_decode(NULL, 60, 2, 2, prompt, &header),
                  FEDOTP_ERR_NULL_POINTER);
    EXPECT_MESSAGE("bytes");
    EXPECT_STATUS(fedotp_client_update_decode(m, 60, 2, 2, NULL, &header), FEDOTP_ERR_NULL_POINTER);
    EXPECT_MESSAGE("prompt_out");
    EXPECT_UPDATE_REFUSED(m, SIZE_MAX, FEDOTP_ERR_SIZE_OVERFLOW, "bytes");
    expect_update_refused(m, 60, 0, 2, FEDOTP_ERR_EMPTY_DIMENSION, "n_ctx", __LINE__);
    expect_update_refused(m, 60, 2, SIZE_MAX, FEDOTP_ERR_SIZE_OVERFLOW, "overflow", __LINE__);
    expect_update_refused(m, 60, 1u << 13, 1u << 13, FEDOTP_ERR_TOO_LARGE, "FEDOTP_MAX", __LINE__);
    poison(prompt, sizeof prompt);
    EXPECT_STATUS(fedotp_client_update_decode(m, 60, 2, 2, prompt, NULL), FEDOTP_ERR_NULL_POINTER);
    EXPECT_MESSAGE("header_out");
    CHECK(untouched(prompt, sizeof prompt), "prompt written although header_out is NULL");

    /* Outputs overlapping the message or each other. */
    static float arena[64];
    uint8_t *in_arena = (uint8_t *)arena;
    memcpy(in_arena, EXAMPLE_UPDATE, sizeof EXAMPLE_UPDATE);
    EXPECT_STATUS(fedotp_client_update_decode(in_arena, 60, 2, 2, arena + 12, &header),
                  FEDOTP_ERR_ALIASED_BUFFERS);
    EXPECT_STATUS(fedotp_client_update_decode(in_arena, 60, 2, 2, prompt,
                                              (FedotpClientUpdateHeader *)(arena + 8)),
                  FEDOTP_ERR_ALIASED_BUFFERS);
    EXPECT_STATUS(fedotp_client_update_decode(m, 60, 2, 2, arena + 32,
                                              (FedotpClientUpdateHeader *)(arena + 30)),
                  FEDOTP_ERR_ALIASED_BUFFERS);
    CHECK(memcmp(in_arena, EXAMPLE_UPDATE, sizeof EXAMPLE_UPDATE) == 0, "message overwritten");
#undef FRESH
}

static void global_prompt_decode_errors_write_nothing(void) {
    uint8_t m[sizeof EXAMPLE_GLOBAL];
    float prompt[4];
    uint32_t round = 99;
    poison(prompt, sizeof prompt);
    memcpy(m, EXAMPLE_GLOBAL, sizeof m);
    EXPECT_STATUS(fedotp_global_prompt_decode(NULL, 44, 2, 2, prompt, &round),
                  FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_global_prompt_decode(m, 44, 2, 2, NULL, &round), FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_global_prompt_decode(m, 44, 2, 2, prompt, NULL), FEDOTP_ERR_NULL_POINTER);
    EXPECT_MESSAGE("round_out");
    EXPECT_STATUS(fedotp_global_prompt_decode(m, 43, 2, 2, prompt, &round),
                  FEDOTP_ERR_MESSAGE_TRUNCATED);
    EXPECT_STATUS(fedotp_global_prompt_decode(m, SIZE_MAX, 2, 2, prompt, &round),
                  FEDOTP_ERR_SIZE_OVERFLOW);
    EXPECT_STATUS(fedotp_global_prompt_decode(EXAMPLE_UPDATE, 60, 2, 2, prompt, &round),
                  FEDOTP_ERR_WRONG_KIND);
    EXPECT_MESSAGE("client update");
    EXPECT_STATUS(fedotp_global_prompt_decode(m, 44, 1, 4, prompt, &round),
                  FEDOTP_ERR_SHAPE_MISMATCH);
    EXPECT_STATUS(fedotp_global_prompt_decode(m, 44, 2, 0, prompt, &round),
                  FEDOTP_ERR_EMPTY_DIMENSION);
    m[30] ^= 0x40;
    EXPECT_STATUS(fedotp_global_prompt_decode(m, 44, 2, 2, prompt, &round),
                  FEDOTP_ERR_CHECKSUM_MISMATCH);
    CHECK(untouched(prompt, sizeof prompt) && round == 99, "output written on error");
    /* With its checksum rewritten the change is believed: bit 6 of byte 30 is the top
       mantissa bit of prompt[1], so -0.5 reads as -0.75. */
    reseal(m, 44);
    EXPECT_STATUS(fedotp_global_prompt_decode(m, 44, 2, 2, prompt, &round), FEDOTP_OK);
    CHECK(prompt[1] == -0.75f && round == 3, "prompt[1] %g, round %u", prompt[1], round);
    poison(prompt, sizeof prompt);
    round = 99;
    m[7] = 1, reseal(m, 44); /* a global prompt has no flags */
    EXPECT_STATUS(fedotp_global_prompt_decode(m, 44, 2, 2, prompt, &round),
                  FEDOTP_ERR_RESERVED_NOT_ZERO);
    static uint32_t arena[16];
    memcpy(arena, EXAMPLE_GLOBAL, sizeof EXAMPLE_GLOBAL);
    EXPECT_STATUS(fedotp_global_prompt_decode((uint8_t *)arena, 44, 2, 2, prompt, &arena[3]),
                  FEDOTP_ERR_ALIASED_BUFFERS);
    CHECK(untouched(prompt, sizeof prompt) && round == 99, "output written on error");
}

/* ---- the aggregator ---------------------------------------------------------------------- */

enum { AGG_CTX = 2, AGG_WIDTH = 3, AGG_LEN = AGG_CTX * AGG_WIDTH, AGG_ROUND = 5 };

static const uint32_t CLIENT_IDS[3] = {101, 7, 42};
static const uint32_t CLIENT_SAMPLES[3] = {1, 3, 4};
static const float CLIENT_PROMPTS[3][AGG_LEN] = {
    {8.0f, 0.0f, -8.0f, 1.0f, 2.0f, 0.5f},
    {0.0f, 8.0f, 8.0f, 1.0f, -2.0f, 0.5f},
    {0.0f, 0.0f, 4.0f, 1.0f, 1.0f, -0.25f},
};
/* By hand: (1 * a + 3 * b + 4 * c) / 8, element by element; every value exact in float.
   (The unweighted mean would start 8/3, 8/3, 4/3.) */
static const float WEIGHTED_MEAN[AGG_LEN] = {1.0f, 3.0f, 4.0f, 1.0f, 0.0f, 0.125f};

/* Encodes client `i`'s update for `round` into `message` (capacity 128), returns its length. */
static size_t client_message(int i, uint32_t round, uint8_t *message) {
    size_t written = 0;
    const float loss = 0.5f * (float)(i + 1);
    EXPECT_STATUS(fedotp_client_update_encode(round, CLIENT_IDS[i], CLIENT_SAMPLES[i],
                                              CLIENT_PROMPTS[i], AGG_CTX, AGG_WIDTH, &loss, NULL,
                                              message, 128, &written),
                  FEDOTP_OK);
    return written;
}

static void expect_progress(const FedotpAggregator *aggregator, uint32_t round, size_t clients,
                            uint64_t total_samples, int line) {
    uint32_t got_round = 0;
    size_t got_clients = 0;
    uint64_t got_total = 0;
    int32_t status = fedotp_aggregator_progress(aggregator, &got_round, &got_clients, &got_total);
    CHECK(status == FEDOTP_OK && got_round == round && got_clients == clients &&
              got_total == total_samples,
          "line %d: progress %d: round %u clients %zu samples %llu, expected %u %zu %llu", line,
          status, got_round, got_clients, (unsigned long long)got_total, round, clients,
          (unsigned long long)total_samples);
}

static void aggregate_a_round_from_messages(void) {
    FedotpAggregator *aggregator = NULL;
    EXPECT_STATUS(fedotp_aggregator_new(AGG_CTX, AGG_WIDTH, AGG_ROUND, 3, &aggregator), FEDOTP_OK);
    CHECK(aggregator != NULL, "no handle");
    CHECK(live_handles() == 1, "%zu live handles, expected 1", live_handles());
    expect_progress(aggregator, AGG_ROUND, 0, 0, __LINE__);
    uint64_t total = 0;
    for (int i = 0; i < 3; i++) {
        uint8_t message[128];
        size_t len = client_message(i, AGG_ROUND, message);
        FedotpClientUpdateHeader header;
        EXPECT_STATUS(fedotp_aggregator_add_message(aggregator, message, len, &header), FEDOTP_OK);
        CHECK(header.round == AGG_ROUND && header.client == CLIENT_IDS[i] &&
                  header.samples == CLIENT_SAMPLES[i] && header.has_loss == 1 &&
                  header.loss == 0.5f * (float)(i + 1) && header.has_accuracy == 0,
              "header of client %u", CLIENT_IDS[i]);
        total += CLIENT_SAMPLES[i];
        expect_progress(aggregator, AGG_ROUND, (size_t)i + 1, total, __LINE__);
    }
    float global[AGG_LEN];
    EXPECT_STATUS(fedotp_aggregator_finish(aggregator, global, AGG_CTX, AGG_WIDTH), FEDOTP_OK);
    for (int j = 0; j < AGG_LEN; j++)
        CHECK(global[j] == WEIGHTED_MEAN[j], "global[%d] = %g, by hand %g", j, global[j],
              WEIGHTED_MEAN[j]);
    /* finish changes nothing: again, the same. */
    float again[AGG_LEN];
    EXPECT_STATUS(fedotp_aggregator_finish(aggregator, again, AGG_CTX, AGG_WIDTH), FEDOTP_OK);
    CHECK(memcmp(global, again, sizeof global) == 0, "second finish differs");
    EXPECT_STATUS(fedotp_aggregator_free(aggregator), FEDOTP_OK);

    /* The same round from values, in another order, header_out NULL: the same average. */
    EXPECT_STATUS(fedotp_aggregator_new(AGG_CTX, AGG_WIDTH, AGG_ROUND, 3, &aggregator), FEDOTP_OK);
    const int order[3] = {2, 0, 1};
    for (int k = 0; k < 3; k++) {
        int i = order[k];
        EXPECT_STATUS(fedotp_aggregator_add_update(aggregator, AGG_ROUND, CLIENT_IDS[i],
                                                   CLIENT_SAMPLES[i], CLIENT_PROMPTS[i], AGG_CTX,
                                                   AGG_WIDTH),
                      FEDOTP_OK);
    }
    EXPECT_STATUS(fedotp_aggregator_finish(aggregator, again, AGG_CTX, AGG_WIDTH), FEDOTP_OK);
    CHECK(memcmp(global, again, sizeof global) == 0, "values and messages disagree");
    EXPECT_STATUS(fedotp_aggregator_free(aggregator), FEDOTP_OK);

    /* Weights that are not powers of two: 100, 250, 650 on 0.1, 0.2, 0.3 give
       (10 + 50 + 195) / 1000 = 0.255 by hand. */
    EXPECT_STATUS(fedotp_aggregator_new(1, 1, 0, 8, &aggregator), FEDOTP_OK);
    const float values[3] = {0.1f, 0.2f, 0.3f};
    const uint32_t weights[3] = {100, 250, 650};
    for (int i = 0; i < 3; i++)
        EXPECT_STATUS(
            fedotp_aggregator_add_update(aggregator, 0, (uint32_t)i, weights[i], &values[i], 1, 1),
            FEDOTP_OK);
    float mean = 0.0f;
    EXPECT_STATUS(fedotp_aggregator_finish(aggregator, &mean, 1, 1), FEDOTP_OK);
    CHECK(fabsf(mean - 0.255f) <= 1e-7f, "mean %.9g, by hand 0.255", mean);
    EXPECT_STATUS(fedotp_aggregator_free(aggregator), FEDOTP_OK);
}

/* `aggregator` holds what `expected` (its finish output) says: round, clients, total, average. */
static void expect_unchanged(FedotpAggregator *aggregator, const float *expected, size_t clients,
                             uint64_t total, int line) {
    expect_progress(aggregator, AGG_ROUND, clients, total, line);
    float now[AGG_LEN];
    int32_t status = fedotp_aggregator_finish(aggregator, now, AGG_CTX, AGG_WIDTH);
    CHECK(status == FEDOTP_OK && memcmp(now, expected, sizeof now) == 0,
          "line %d: the aggregate changed (status %d)", line, status);
}

static void refused_updates_leave_the_aggregate_unchanged(void) {
    FedotpAggregator *aggregator = NULL;
    EXPECT_STATUS(fedotp_aggregator_new(AGG_CTX, AGG_WIDTH, AGG_ROUND, 3, &aggregator), FEDOTP_OK);
    float before[AGG_LEN];
    EXPECT_STATUS(fedotp_aggregator_finish(aggregator, before, AGG_CTX, AGG_WIDTH),
                  FEDOTP_ERR_NO_UPDATES);
    EXPECT_MESSAGE("round 5");
    _Alignas(FedotpClientUpdateHeader) uint8_t message[128];
    for (int i = 0; i < 2; i++) {
        size_t len = client_message(i, AGG_ROUND, message);
        EXPECT_STATUS(fedotp_aggregator_add_message(aggregator, message, len, NULL), FEDOTP_OK);
    }
    EXPECT_STATUS(fedotp_aggregator_finish(aggregator, before, AGG_CTX, AGG_WIDTH), FEDOTP_OK);
    const uint64_t total = CLIENT_SAMPLES[0] + CLIENT_SAMPLES[1];
    FedotpClientUpdateHeader header;
    poison(&header, sizeof header);
    size_t written = 0;
    const float nan_prompt[AGG_LEN] = {1, 2, 3, NAN, 5, 6};

    /* Refused with `status` and a last error that mentions `detail`, the aggregate as before. */
#define REFUSED(call, status, detail)                              \
    do {                                                           \
        EXPECT_STATUS(call, status);                               \
        EXPECT_MESSAGE(detail);                                    \
        expect_unchanged(aggregator, before, 2, total, __LINE__);  \
    } while (0)

    /* A client already counted, with another prompt. */
    fedotp_client_update_encode(AGG_ROUND, CLIENT_IDS[1], 50, CLIENT_PROMPTS[2], AGG_CTX,
                                AGG_WIDTH, NULL, NULL, message, sizeof message, &written);
    REFUSED(fedotp_aggregator_add_message(aggregator, message, written, &header),
            FEDOTP_ERR_DUPLICATE_CLIENT, "client 7");
    REFUSED(fedotp_aggregator_add_update(aggregator, AGG_ROUND, CLIENT_IDS[0], 9,
                                         CLIENT_PROMPTS[2], AGG_CTX, AGG_WIDTH),
            FEDOTP_ERR_DUPLICATE_CLIENT, "client 101");
    /* Another round's update. */
    size_t len = client_message(2, AGG_ROUND - 1, message);
    REFUSED(fedotp_aggregator_add_message(aggregator, message, len, &header),
            FEDOTP_ERR_ROUND_MISMATCH, "round 4");
    REFUSED(fedotp_aggregator_add_update(aggregator, AGG_ROUND + 1, CLIENT_IDS[2], 4,
                                         CLIENT_PROMPTS[2], AGG_CTX, AGG_WIDTH),
            FEDOTP_ERR_ROUND_MISMATCH, "round 6");
    /* Zero weight: a valid message, refused by the aggregation rule. */
    fedotp_client_update_encode(AGG_ROUND, CLIENT_IDS[2], 0, CLIENT_PROMPTS[2], AGG_CTX,
                                AGG_WIDTH, NULL, NULL, message, sizeof message, &written);
    REFUSED(fedotp_aggregator_add_message(aggregator, message, written, &header),
            FEDOTP_ERR_ZERO_WEIGHT, "0 samples");
    REFUSED(fedotp_aggregator_add_update(aggregator, AGG_ROUND, CLIENT_IDS[2], 0,
                                         CLIENT_PROMPTS[2], AGG_CTX, AGG_WIDTH),
            FEDOTP_ERR_ZERO_WEIGHT, "0 samples");
    /* Non-finite values: from values, and in a message whose checksum is valid. */
    REFUSED(fedotp_aggregator_add_update(aggregator, AGG_ROUND, CLIENT_IDS[2], 4, nan_prompt,
                                         AGG_CTX, AGG_WIDTH),
            FEDOTP_ERR_NON_FINITE, "element 3");
    len = client_message(2, AGG_ROUND, message);
    put_f32(message + 40 + 4 * 4, INFINITY), reseal(message, len);
    REFUSED(fedotp_aggregator_add_message(aggregator, message, len, &header),
            FEDOTP_ERR_NON_FINITE, "prompt element 4");
    /* Another shape. */
    REFUSED(fedotp_aggregator_add_update(aggregator, AGG_ROUND, CLIENT_IDS[2], 4,
                                         CLIENT_PROMPTS[2], AGG_WIDTH, AGG_CTX),
            FEDOTP_ERR_SHAPE_MISMATCH, "3×2");
    fedotp_client_update_encode(AGG_ROUND, CLIENT_IDS[2], 4, CLIENT_PROMPTS[2], AGG_WIDTH,
                                AGG_CTX, NULL, NULL, message, sizeof message, &written);
    REFUSED(fedotp_aggregator_add_message(aggregator, message, written, &header),
            FEDOTP_ERR_SHAPE_MISMATCH, "3×2");
    /* Damaged or foreign messages. */
    len = client_message(2, AGG_ROUND, message);
    message[45] ^= 0x10;
    REFUSED(fedotp_aggregator_add_message(aggregator, message, len, &header),
            FEDOTP_ERR_CHECKSUM_MISMATCH, "checksum");
    message[45] ^= 0x10;
    REFUSED(fedotp_aggregator_add_message(aggregator, message, len - 1, &header),
            FEDOTP_ERR_MESSAGE_TRUNCATED, "truncated");
    REFUSED(fedotp_aggregator_add_message(aggregator, EXAMPLE_GLOBAL, sizeof EXAMPLE_GLOBAL,
                                          &header),
            FEDOTP_ERR_WRONG_KIND, "global prompt");
    REFUSED(fedotp_aggregator_add_message(aggregator, message, SIZE_MAX, &header),
            FEDOTP_ERR_SIZE_OVERFLOW, "bytes");
    REFUSED(fedotp_aggregator_add_message(aggregator, NULL, len, &header),
            FEDOTP_ERR_NULL_POINTER, "`bytes` is NULL");
    REFUSED(fedotp_aggregator_add_message(aggregator, message, len,
                                          (FedotpClientUpdateHeader *)(message + 4)),
            FEDOTP_ERR_ALIASED_BUFFERS, "header_out");
    /* Bad arguments to add_update. */
    REFUSED(fedotp_aggregator_add_update(aggregator, AGG_ROUND, CLIENT_IDS[2], 4, NULL, AGG_CTX,
                                         AGG_WIDTH),
            FEDOTP_ERR_NULL_POINTER, "`prompt` is NULL");
    REFUSED(fedotp_aggregator_add_update(aggregator, AGG_ROUND, CLIENT_IDS[2], 4,
                                         CLIENT_PROMPTS[2], 0, AGG_WIDTH),
            FEDOTP_ERR_EMPTY_DIMENSION, "`n_ctx` is zero");
    REFUSED(fedotp_aggregator_add_update(aggregator, AGG_ROUND, CLIENT_IDS[2], 4,
                                         CLIENT_PROMPTS[2], SIZE_MAX, SIZE_MAX),
            FEDOTP_ERR_SIZE_OVERFLOW, "overflows");
    REFUSED(fedotp_aggregator_add_update(aggregator, AGG_ROUND, CLIENT_IDS[2], 4,
                                         CLIENT_PROMPTS[2], 1 << 20, 1 << 10),
            FEDOTP_ERR_TOO_LARGE, "FEDOTP_MAX_PROMPT_LEN");
    CHECK(untouched(&header, sizeof header), "header_out written on a refusal");

    /* The third client fills the list; a fourth is one too many. */
    len = client_message(2, AGG_ROUND, message);
    EXPECT_STATUS(fedotp_aggregator_add_message(aggregator, message, len, &header), FEDOTP_OK);
    float full[AGG_LEN];
    EXPECT_STATUS(fedotp_aggregator_finish(aggregator, full, AGG_CTX, AGG_WIDTH), FEDOTP_OK);
    CHECK(memcmp(full, WEIGHTED_MEAN, sizeof full) == 0, "three-client mean");
    EXPECT_STATUS(fedotp_aggregator_add_update(aggregator, AGG_ROUND, 1000, 5, CLIENT_PROMPTS[0],
                                               AGG_CTX, AGG_WIDTH),
                  FEDOTP_ERR_CLIENT_LIST_FULL);
    EXPECT_MESSAGE("3 clients");
    expect_progress(aggregator, AGG_ROUND, 3, 8, __LINE__);
    EXPECT_STATUS(fedotp_aggregator_finish(aggregator, full, AGG_CTX, AGG_WIDTH), FEDOTP_OK);
    CHECK(memcmp(full, WEIGHTED_MEAN, sizeof full) == 0, "changed by a refused fourth client");

    /* finish's own errors write nothing. */
    float out[2 * AGG_LEN];
    poison(out, sizeof out);
    EXPECT_STATUS(fedotp_aggregator_finish(aggregator, NULL, AGG_CTX, AGG_WIDTH),
                  FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_aggregator_finish(aggregator, out, AGG_WIDTH, AGG_CTX),
                  FEDOTP_ERR_SHAPE_MISMATCH);
    EXPECT_MESSAGE("3×2");
    EXPECT_STATUS(fedotp_aggregator_finish(aggregator, out, 2 * AGG_CTX, AGG_WIDTH),
                  FEDOTP_ERR_SHAPE_MISMATCH);
    EXPECT_STATUS(fedotp_aggregator_finish(aggregator, out, AGG_CTX, 0),
                  FEDOTP_ERR_EMPTY_DIMENSION);
    EXPECT_STATUS(fedotp_aggregator_finish(aggregator, out, SIZE_MAX, 3),
                  FEDOTP_ERR_SIZE_OVERFLOW);
    CHECK(untouched(out, sizeof out), "finish wrote on error");

    /* The next round starts empty and takes the same clients again. */
    EXPECT_STATUS(fedotp_aggregator_start_round(aggregator, AGG_ROUND + 1), FEDOTP_OK);
    expect_progress(aggregator, AGG_ROUND + 1, 0, 0, __LINE__);
    EXPECT_STATUS(fedotp_aggregator_finish(aggregator, out, AGG_CTX, AGG_WIDTH),
                  FEDOTP_ERR_NO_UPDATES);
    CHECK(untouched(out, sizeof out), "finish wrote on error");
    len = client_message(0, AGG_ROUND, message);
    EXPECT_STATUS(fedotp_aggregator_add_message(aggregator, message, len, NULL),
                  FEDOTP_ERR_ROUND_MISMATCH);
    len = client_message(0, AGG_ROUND + 1, message);
    EXPECT_STATUS(fedotp_aggregator_add_message(aggregator, message, len, NULL), FEDOTP_OK);
    EXPECT_STATUS(fedotp_aggregator_finish(aggregator, out, AGG_CTX, AGG_WIDTH), FEDOTP_OK);
    CHECK(memcmp(out, CLIENT_PROMPTS[0], sizeof CLIENT_PROMPTS[0]) == 0,
          "one client's average is its prompt");
    EXPECT_STATUS(fedotp_aggregator_free(aggregator), FEDOTP_OK);
#undef REFUSED
}

static void aggregator_new_errors_write_nothing(void) {
    FedotpAggregator *const sentinel = (FedotpAggregator *)(uintptr_t)0x5a5a;
    FedotpAggregator *aggregator = sentinel;
    EXPECT_STATUS(fedotp_aggregator_new(2, 3, 0, 10, NULL), FEDOTP_ERR_NULL_POINTER);
    EXPECT_MESSAGE("aggregator_out");
    EXPECT_STATUS(fedotp_aggregator_new(0, 3, 0, 10, &aggregator), FEDOTP_ERR_EMPTY_DIMENSION);
    EXPECT_STATUS(fedotp_aggregator_new(2, 0, 0, 10, &aggregator), FEDOTP_ERR_EMPTY_DIMENSION);
    EXPECT_STATUS(fedotp_aggregator_new(2, 3, 0, 0, &aggregator), FEDOTP_ERR_EMPTY_DIMENSION);
    EXPECT_MESSAGE("max_clients");
    EXPECT_STATUS(fedotp_aggregator_new(SIZE_MAX, 3, 0, 10, &aggregator),
                  FEDOTP_ERR_SIZE_OVERFLOW);
    EXPECT_STATUS(fedotp_aggregator_new(4097, 4096, 0, 10, &aggregator), FEDOTP_ERR_TOO_LARGE);
    EXPECT_STATUS(fedotp_aggregator_new(2, 3, 0, FEDOTP_MAX_CLIENTS + 1, &aggregator),
                  FEDOTP_ERR_TOO_LARGE);
    EXPECT_MESSAGE("FEDOTP_MAX_CLIENTS");
    EXPECT_STATUS(fedotp_aggregator_new(2, 3, 0, SIZE_MAX, &aggregator), FEDOTP_ERR_TOO_LARGE);
    CHECK(aggregator == sentinel, "aggregator_out written on error");
}

/* Every function on a handle, expecting `status`; outputs must stay untouched. */
static void expect_handle_refused(FedotpAggregator *aggregator, int32_t status, const char *detail,
                                  int line) {
    uint8_t message[128];
    size_t len = client_message(0, AGG_ROUND, message);
    FedotpClientUpdateHeader header;
    float global[AGG_LEN];
    uint32_t round = 99;
    size_t clients = 99;
    uint64_t total = 99;
    poison(&header, sizeof header);
    poison(global, sizeof global);
    int32_t got[6] = {
        fedotp_aggregator_add_message(aggregator, message, len, &header),
        fedotp_aggregator_add_update(aggregator, AGG_ROUND, 1, 1, CLIENT_PROMPTS[0], AGG_CTX,
                                     AGG_WIDTH),
        fedotp_aggregator_finish(aggregator, global, AGG_CTX, AGG_WIDTH),
        fedotp_aggregator_start_round(aggregator, 9),
        fedotp_aggregator_progress(aggregator, &round, &clients, &total),
        fedotp_aggregator_free(aggregator),
    };
    for (int i = 0; i < 6; i++) {
        CHECK(got[i] == status, "line %d: function %d returned %d (%s), expected %d", line, i,
              got[i], fedotp_status_str(got[i]), status);
    }
    CHECK(strstr(fedotp_last_error_message(), detail) != NULL,
          "line %d: last error \"%s\" lacks \"%s\"", line, fedotp_last_error_message(), detail);
    CHECK(untouched(&header, sizeof header) && untouched(global, sizeof global) && round == 99 &&
              clients == 99 && total == 99,
          "line %d: output written through a bad handle", line);
}

static void bad_handles_are_refused(void) {
    /* NULL: refused by every function but free, for which it is a no-op. */
    uint8_t message[128];
    size_t len = client_message(0, AGG_ROUND, message);
    float global[AGG_LEN];
    uint32_t round;
    size_t clients;
    uint64_t total;
    EXPECT_STATUS(fedotp_aggregator_add_message(NULL, message, len, NULL),
                  FEDOTP_ERR_NULL_POINTER);
    EXPECT_MESSAGE("aggregator");
    EXPECT_STATUS(fedotp_aggregator_add_update(NULL, AGG_ROUND, 1, 1, CLIENT_PROMPTS[0], AGG_CTX,
                                               AGG_WIDTH),
                  FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_aggregator_finish(NULL, global, AGG_CTX, AGG_WIDTH),
                  FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_aggregator_start_round(NULL, 1), FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_aggregator_progress(NULL, &round, &clients, &total),
                  FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_aggregator_free(NULL), FEDOTP_OK);

    /* progress's own outputs. */
    FedotpAggregator *aggregator = NULL;
    EXPECT_STATUS(fedotp_aggregator_new(AGG_CTX, AGG_WIDTH, AGG_ROUND, 4, &aggregator), FEDOTP_OK);
    EXPECT_STATUS(fedotp_aggregator_progress(aggregator, NULL, &clients, &total),
                  FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_aggregator_progress(aggregator, &round, NULL, &total),
                  FEDOTP_ERR_NULL_POINTER);
    EXPECT_STATUS(fedotp_aggregator_progress(aggregator, &round, &clients, NULL),
                  FEDOTP_ERR_NULL_POINTER);
    EXPECT_MESSAGE("total_samples_out");
    EXPECT_STATUS(fedotp_aggregator_progress(aggregator, &round, &clients, (uint64_t *)&clients),
                  FEDOTP_ERR_ALIASED_BUFFERS);

    /* Freed: every function refuses it, a second free included. */
    EXPECT_STATUS(fedotp_aggregator_free(aggregator), FEDOTP_OK);
    expect_handle_refused(aggregator, FEDOTP_ERR_INVALID_HANDLE, "already freed", __LINE__);
    EXPECT_STATUS(fedotp_aggregator_free(aggregator), FEDOTP_ERR_INVALID_HANDLE);

    /* A new aggregator never takes the freed one's handle. */
    FedotpAggregator *next = NULL;
    EXPECT_STATUS(fedotp_aggregator_new(AGG_CTX, AGG_WIDTH, AGG_ROUND, 4, &next), FEDOTP_OK);
    CHECK(next != aggregator, "a handle was reused");
    EXPECT_STATUS(fedotp_aggregator_free(aggregator), FEDOTP_ERR_INVALID_HANDLE);
    expect_progress(next, AGG_ROUND, 0, 0, __LINE__);

    /* Forged: an odd value never issued, the address of a real object, a stray pointer into
       the handle's neighbourhood. */
    int local = 0;
    FedotpAggregator *forged[3] = {
        (FedotpAggregator *)(uintptr_t)0x12345,
        (FedotpAggregator *)(void *)&local,
        (FedotpAggregator *)((uintptr_t)next + 2),
    };
    for (int i = 0; i < 3; i++)
        expect_handle_refused(forged[i], FEDOTP_ERR_INVALID_HANDLE, "not a handle", __LINE__);
    /* None of that disturbed the live one. */
    expect_progress(next, AGG_ROUND, 0, 0, __LINE__);
    EXPECT_STATUS(fedotp_aggregator_free(next), FEDOTP_OK);
}

/* ---- threads ----------------------------------------------------------------------------- */

enum { THREADS = 8, PER_THREAD = 50, SHARED_CLIENT = 9999 };

typedef struct {
    FedotpAggregator *aggregator;
    int thread;
    int failures;              /* this thread's unexpected statuses */
    int shared_client_status;  /* its attempt to add SHARED_CLIENT */
} Worker;

static float thread_prompt_value(uint32_t client, int j) {
    return (float)((int)(client % 17) - 8) * 0.125f + (float)j;
}

static uint32_t thread_samples(uint32_t client) { return 1 + client % 7; }

static int add_client(FedotpAggregator *aggregator, uint32_t client) {
    float prompt[AGG_LEN];
    for (int j = 0; j < AGG_LEN; j++) prompt[j] = thread_prompt_value(client, j);
    uint8_t message[128];
    size_t written = 0;
    int32_t status = fedotp_client_update_encode(AGG_ROUND, client, thread_samples(client), prompt,
                                                 AGG_CTX, AGG_WIDTH, NULL, NULL, message,
                                                 sizeof message, &written);
    if (status != FEDOTP_OK) return status;
    return fedotp_aggregator_add_message(aggregator, message, written, NULL);
}

static void *worker(void *arg) {
    Worker *w = arg;
    for (int k = 0; k < PER_THREAD; k++) {
        uint32_t client = (uint32_t)(w->thread * PER_THREAD + k);
        if (add_client(w->aggregator, client) != FEDOTP_OK) w->failures++;
        if (k == PER_THREAD / 2) w->shared_client_status = add_client(w->aggregator, SHARED_CLIENT);
    }
    /* A refusal in this thread sets this thread's last error only. */
    if (fedotp_aggregator_start_round(NULL, 0) != FEDOTP_ERR_NULL_POINTER) w->failures++;
    return NULL;
}

static void one_aggregator_many_threads(void) {
    FedotpAggregator *aggregator = NULL;
    EXPECT_STATUS(fedotp_aggregator_new(AGG_CTX, AGG_WIDTH, AGG_ROUND, THREADS * PER_THREAD + 1,
                                        &aggregator),
                  FEDOTP_OK);
    /* The main thread's last error, which the workers' errors must not replace. */
    EXPECT_STATUS(fedotp_aggregator_finish(aggregator, NULL, AGG_CTX, AGG_WIDTH),
                  FEDOTP_ERR_NULL_POINTER);
    pthread_t threads[THREADS];
    Worker workers[THREADS];
    for (int t = 0; t < THREADS; t++) {
        workers[t] = (Worker){aggregator, t, 0, 1};
        CHECK(pthread_create(&threads[t], NULL, worker, &workers[t]) == 0, "pthread_create");
    }
    int accepted_shared = 0;
    for (int t = 0; t < THREADS; t++) {
        pthread_join(threads[t], NULL);
        CHECK(workers[t].failures == 0, "thread %d: %d failures", t, workers[t].failures);
        if (workers[t].shared_client_status == FEDOTP_OK)
            accepted_shared++;
        else
            CHECK(workers[t].shared_client_status == FEDOTP_ERR_DUPLICATE_CLIENT,
                  "thread %d: shared client got %d", t, workers[t].shared_client_status);
    }
    CHECK(accepted_shared == 1, "the shared client was counted %d times", accepted_shared);
    EXPECT_MESSAGE("global_out");

    /* The reference: the weighted mean in double precision, computed here. */
    double sum[AGG_LEN] = {0};
    uint64_t total = 0;
    for (uint32_t client = 0; client <= THREADS * PER_THREAD; client++) {
        uint32_t id = client < THREADS * PER_THREAD ? client : SHARED_CLIENT;
        total += thread_samples(id);
        for (int j = 0; j < AGG_LEN; j++)
            sum[j] += (double)thread_samples(id) * (double)thread_prompt_value(id, j);
    }
    expect_progress(aggregator, AGG_ROUND, THREADS * PER_THREAD + 1, total, __LINE__);
    float global[AGG_LEN];
    EXPECT_STATUS(fedotp_aggregator_finish(aggregator, global, AGG_CTX, AGG_WIDTH), FEDOTP_OK);
    for (int j = 0; j < AGG_LEN; j++) {
        float expected = (float)(sum[j] / (double)total);
        CHECK(global[j] == expected, "global[%d] = %.9g, reference %.9g", j, global[j], expected);
    }
    EXPECT_STATUS(fedotp_aggregator_free(aggregator), FEDOTP_OK);
}

/* ---- status names ------------------------------------------------------------------------ */

static void status_strings(void) {
    const int32_t codes[] = {
        FEDOTP_OK, FEDOTP_ERR_NULL_POINTER, FEDOTP_ERR_PANIC, FEDOTP_ERR_ALIASED_BUFFERS,
        FEDOTP_ERR_OUT_OF_MEMORY, FEDOTP_ERR_EMPTY_DIMENSION, FEDOTP_ERR_SIZE_OVERFLOW,
        FEDOTP_ERR_NON_FINITE, FEDOTP_ERR_TOO_LARGE, FEDOTP_ERR_BUFFER_TOO_SMALL,
        FEDOTP_ERR_INVALID_EPS, FEDOTP_ERR_INVALID_GAMMA, FEDOTP_ERR_INVALID_MAX_ITER,
        FEDOTP_ERR_INVALID_TOL, FEDOTP_ERR_INVALID_BALANCED, FEDOTP_ERR_INVALID_SCALE,
        FEDOTP_ERR_ZERO_NORM, FEDOTP_ERR_INVALID_HANDLE, FEDOTP_ERR_WRONG_HANDLE_TYPE,
        FEDOTP_ERR_MESSAGE_TRUNCATED, FEDOTP_ERR_BAD_MAGIC, FEDOTP_ERR_UNSUPPORTED_VERSION,
        FEDOTP_ERR_UNKNOWN_KIND, FEDOTP_ERR_WRONG_KIND, FEDOTP_ERR_LENGTH_MISMATCH,
        FEDOTP_ERR_TRAILING_BYTES, FEDOTP_ERR_CHECKSUM_MISMATCH, FEDOTP_ERR_RESERVED_NOT_ZERO,
        FEDOTP_ERR_SHAPE_MISMATCH, FEDOTP_ERR_ACCURACY_OUT_OF_RANGE, FEDOTP_ERR_ROUND_MISMATCH,
        FEDOTP_ERR_ZERO_WEIGHT, FEDOTP_ERR_DUPLICATE_CLIENT, FEDOTP_ERR_CLIENT_LIST_FULL,
        FEDOTP_ERR_NO_UPDATES};
    check_status_names(codes, sizeof codes / sizeof codes[0]);
    for (size_t i = 1; i < sizeof codes / sizeof codes[0]; i++)
        CHECK(codes[i] < 0, "error status %d is not negative", codes[i]);
}

int main(void) {
    CHECK(live_handles() == 0, "handles alive at start");
    EXPECT_STATUS(fedotp_live_handles(NULL), FEDOTP_ERR_NULL_POINTER);
    sizes();
    examples_byte_for_byte();
    encode_writes_only_the_message();
    client_update_encode_errors_write_nothing();
    global_prompt_encode_errors_write_nothing();
    round_trips();
    client_update_decode_names_every_defect();
    global_prompt_decode_errors_write_nothing();
    aggregate_a_round_from_messages();
    refused_updates_leave_the_aggregate_unchanged();
    aggregator_new_errors_write_nothing();
    bad_handles_are_refused();
    one_aggregator_many_threads();
    status_strings();
    /* Every handle was freed: objects behind handles stay reachable from the registry, so
       LeakSanitizer and valgrind cannot tell a forgotten one; this count can. */
    CHECK(live_handles() == 0, "%zu handle(s) leaked", live_handles());
    return report("wire-format and aggregator C API");
}
