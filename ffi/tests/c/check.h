/* The checks the C test programs share: CHECK counts a failed condition and goes on, so one run
 * reports every mismatch; EXPECT_STATUS also prints the status's name and the last-error detail.
 * main() returns non-zero when `failures` is. One translation unit per program includes it. */
#ifndef FEDOTP_TEST_CHECK_H
#define FEDOTP_TEST_CHECK_H

#include <stdio.h>
#include <string.h>

#include "fedotp.h"

static int failures = 0;

#define CHECK(cond, ...)                                   \
    do {                                                   \
        if (!(cond)) {                                     \
            fprintf(stderr, "%s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                  \
            fprintf(stderr, "\n");                         \
            failures++;                                    \
        }                                                  \
    } while (0)

#define EXPECT_STATUS(call, expected)                                                        \
    do {                                                                                     \
        int32_t got_ = (call);                                                               \
        CHECK(got_ == (expected), "%s returned %d (%s: %s), expected %d", #call, got_,      \
              fedotp_status_str(got_), fedotp_last_error_message(), (expected));             \
    } while (0)

/* The last error's detail mentions `text`. */
#define EXPECT_MESSAGE(text)                                                                 \
    CHECK(strstr(fedotp_last_error_message(), (text)) != NULL, "last error \"%s\" lacks \"%s\"", \
          fedotp_last_error_message(), (text))

/* Every status in `codes` has a name of its own, and no code is used twice. */
static void check_status_names(const int32_t *codes, size_t count) {
    for (size_t i = 0; i < count; i++) {
        const char *s = fedotp_status_str(codes[i]);
        CHECK(s != NULL && strlen(s) > 0 && strcmp(s, "unknown status") != 0,
              "status %d has no name", codes[i]);
        for (size_t j = 0; j < i; j++) {
            CHECK(codes[i] != codes[j], "status %d used twice", codes[i]);
            CHECK(strcmp(s, fedotp_status_str(codes[j])) != 0, "statuses %d and %d share a name",
                  codes[i], codes[j]);
        }
    }
}

#define SENTINEL 0xA5

/* Fills a buffer with SENTINEL, to check later that an error wrote nothing to it. */
static inline void poison(void *buffer, size_t len) { memset(buffer, SENTINEL, len); }

static inline int untouched(const void *buffer, size_t len) {
    const uint8_t *bytes = buffer;
    for (size_t i = 0; i < len; i++)
        if (bytes[i] != SENTINEL) return 0;
    return 1;
}

/* The number of live handles in the process. */
static inline size_t live_handles(void) {
    size_t count = 12345;
    EXPECT_STATUS(fedotp_live_handles(&count), FEDOTP_OK);
    return count;
}

static int report(const char *what) {
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("all %s checks passed\n", what);
    return 0;
}

#endif
