/*
 * Tests of the kastore C library; no test framework, libc only.
 *
 *   test_kastore TESTDATA_DIR SCRATCH_DIR
 *       runs every test; the shared reference files are read from
 *       TESTDATA_DIR (pass "-" to skip them) and scratch files are written in
 *       SCRATCH_DIR. Prints one "files <folder> <count>" line per folder of
 *       reference files checked, and exits non-zero if any check failed.
 *   test_kastore --stream COUNT CODE
 *       reads stores from standard input (a pipe, so nothing can seek) until
 *       an error; passes if COUNT stores were read and the error was CODE,
 *       or, with COUNT and CODE both "any", if the error is a KAS_ERR code.
 *
 * Meant to run under AddressSanitizer and UBSan, which turn any read or
 * write out of bounds, any leak and any double free into a failure.
 */
#include "kastore.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
            failures++;                                                                \
        }                                                                              \
    } while (0)

#define CHECK_RET(expr, expected)                                                      \
    do {                                                                               \
        int got_ = (expr);                                                             \
        int want_ = (expected);                                                        \
        if (got_ != want_) {                                                           \
            fprintf(stderr, "%s:%d: %s returned %d (%s), expected %d\n", __FILE__,     \
                __LINE__, #expr, got_, kas_strerror(got_), want_);                     \
            failures++;                                                                \
        }                                                                              \
    } while (0)

/* For checks that later code cannot survive. */
#define REQUIRE(cond)                                                                  \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: fatal: %s\n", __FILE__, __LINE__, #cond);          \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

static const char *type_names[KAS_NUM_TYPES] = { "int8", "uint8", "int16", "uint16",
    "int32", "uint32", "int64", "uint64", "float32", "float64" };
static const size_t type_sizes[KAS_NUM_TYPES] = { 1, 1, 2, 2, 4, 4, 8, 8, 4, 8 };

static char scratch_dir[1024] = ".";

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

static void
join(char *out, size_t size, const char *dir, const char *name)
{
    int n = snprintf(out, size, "%s/%s", dir, name);
    REQUIRE(n > 0 && (size_t) n < size);
}

static void
scratch_path(char *out, size_t size, const char *name)
{
    join(out, size, scratch_dir, name);
}

/* The rest of a stream, from its start, as a malloc'd block. */
static unsigned char *
stream_bytes(FILE *f, size_t *size)
{
    size_t cap = 4096, len = 0, got;
    unsigned char *buf = (unsigned char *) malloc(cap);

    REQUIRE(buf != NULL);
    while ((got = fread(buf + len, 1, cap - len, f)) > 0) {
        len += got;
        if (len == cap) {
            cap *= 2;
            buf = (unsigned char *) realloc(buf, cap);
            REQUIRE(buf != NULL);
        }
    }
    REQUIRE(!ferror(f));
    *size = len;
    return buf;
}

static unsigned char *
file_bytes(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf;

    if (f == NULL) {
        fprintf(stderr, "cannot open %s\n", path);
        exit(1);
    }
    buf = stream_bytes(f, size);
    fclose(f);
    return buf;
}

static void
write_bytes(const char *path, const void *data, size_t size)
{
    FILE *f = fopen(path, "wb");

    REQUIRE(f != NULL);
    REQUIRE(fwrite(data, 1, size, f) == size);
    REQUIRE(fclose(f) == 0);
}

static FILE *
temp_with(const void *data, size_t size)
{
    FILE *f = tmpfile();

    REQUIRE(f != NULL);
    if (size > 0) {
        REQUIRE(fwrite(data, 1, size, f) == size);
    }
    rewind(f);
    return f;
}

/* A deterministic pseudo-random generator (xorshift64*). */
static uint64_t rng_state = 88172645463325252u;

static uint64_t
rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717u;
}

static void
fill_pattern(void *data, size_t size, unsigned seed)
{
    size_t j;

    for (j = 0; j < size; j++) {
        ((unsigned char *) data)[j] = (unsigned char) (j * 31 + seed * 7 + 1);
    }
}

/* Bytewise key order, written out again here so the test does not trust the
 * library's own comparison. */
static int
key_before(const kaitem_t *a, const kaitem_t *b)
{
    size_t n = a->key_len < b->key_len ? a->key_len : b->key_len;
    int c = n > 0 ? memcmp(a->key, b->key, n) : 0;

    return c < 0 || (c == 0 && a->key_len < b->key_len);
}

static void *
xmalloc(size_t size)
{
    void *p = malloc(size > 0 ? size : 1);

    REQUIRE(p != NULL);
    return p;
}

/* Puts an array by one of four routes: 0 kastore_put (copy), 1 the typed
 * put (copy), 2 the typed own-put of a malloc'd copy, 3 the typed put with
 * KAS_BORROWS_ARRAY. */
static int
put_by(kastore_t *s, const char *key, int type, const void *data, size_t len, int route)
{
    int flags = route == 3 ? KAS_BORROWS_ARRAY : 0;
    void *own;
    int ret;

    if (route == 0) {
        return kastore_put(s, key, strlen(key), data, len, type, 0);
    }
    if (route == 2) {
        own = xmalloc(len * type_sizes[type]);
        memcpy(own, data, len * type_sizes[type]);
        switch (type) {
            case KAS_INT8: ret = kastore_oputs_int8(s, key, (int8_t *) own, len, 0); break;
            case KAS_UINT8: ret = kastore_oputs_uint8(s, key, (uint8_t *) own, len, 0); break;
            case KAS_INT16: ret = kastore_oputs_int16(s, key, (int16_t *) own, len, 0); break;
            case KAS_UINT16: ret = kastore_oputs_uint16(s, key, (uint16_t *) own, len, 0); break;
            case KAS_INT32: ret = kastore_oputs_int32(s, key, (int32_t *) own, len, 0); break;
            case KAS_UINT32: ret = kastore_oputs_uint32(s, key, (uint32_t *) own, len, 0); break;
            case KAS_INT64: ret = kastore_oputs_int64(s, key, (int64_t *) own, len, 0); break;
            case KAS_UINT64: ret = kastore_oputs_uint64(s, key, (uint64_t *) own, len, 0); break;
            case KAS_FLOAT32: ret = kastore_oputs_float32(s, key, (float *) own, len, 0); break;
            default: ret = kastore_oputs_float64(s, key, (double *) own, len, 0); break;
        }
        if (ret != 0) {
            free(own); /* ownership passes only on success */
        }
        return ret;
    }
    switch (type) {
        case KAS_INT8: return kastore_puts_int8(s, key, (const int8_t *) data, len, flags);
        case KAS_UINT8: return kastore_puts_uint8(s, key, (const uint8_t *) data, len, flags);
        case KAS_INT16: return kastore_puts_int16(s, key, (const int16_t *) data, len, flags);
        case KAS_UINT16: return kastore_puts_uint16(s, key, (const uint16_t *) data, len, flags);
        case KAS_INT32: return kastore_puts_int32(s, key, (const int32_t *) data, len, flags);
        case KAS_UINT32: return kastore_puts_uint32(s, key, (const uint32_t *) data, len, flags);
        case KAS_INT64: return kastore_puts_int64(s, key, (const int64_t *) data, len, flags);
        case KAS_UINT64: return kastore_puts_uint64(s, key, (const uint64_t *) data, len, flags);
        case KAS_FLOAT32: return kastore_puts_float32(s, key, (const float *) data, len, flags);
        default: return kastore_puts_float64(s, key, (const double *) data, len, flags);
    }
}

/* The typed get for a type code. */
static int
get_as(kastore_t *s, const char *key, int type, void **array, size_t *len)
{
    int ret;

#define GET_AS(code, name, ctype)                                                      \
    case code: {                                                                       \
        ctype *a = NULL;                                                               \
        ret = kastore_gets_##name(s, key, &a, len);                                    \
        *array = a;                                                                    \
        return ret;                                                                    \
    }
    switch (type) {
        GET_AS(KAS_INT8, int8, int8_t)
        GET_AS(KAS_UINT8, uint8, uint8_t)
        GET_AS(KAS_INT16, int16, int16_t)
        GET_AS(KAS_UINT16, uint16, uint16_t)
        GET_AS(KAS_INT32, int32, int32_t)
        GET_AS(KAS_UINT32, uint32, uint32_t)
        GET_AS(KAS_INT64, int64, int64_t)
        GET_AS(KAS_UINT64, uint64, uint64_t)
        GET_AS(KAS_FLOAT32, float32, float)
        GET_AS(KAS_FLOAT64, float64, double)
    }
#undef GET_AS
    ret = KAS_ERR_BAD_TYPE;
    return ret;
}

/* Lays out a store with the items in the order given (sorted or not), as a
 * writer following the format would: an independent check of the reader. */
typedef struct {
    const char *key;
    int type;
    size_t len;
    unsigned seed;
} handmade_t;

static void
put_le(unsigned char *p, uint64_t v, int size)
{
    int j;

    for (j = 0; j < size; j++) {
        p[j] = (unsigned char) (v >> (8 * j));
    }
}

static unsigned char *
handmade_store(const handmade_t *items, size_t n, int major, int minor, size_t *size)
{
    size_t offset = 64 + 64 * n, keys_end, j, total;
    unsigned char *buf;

    for (j = 0; j < n; j++) {
        offset += strlen(items[j].key);
    }
    keys_end = offset;
    for (j = 0; j < n; j++) {
        offset = (offset + 7) & ~(size_t) 7;
        offset += items[j].len * type_sizes[items[j].type];
    }
    total = n > 0 ? offset : 64;
    buf = (unsigned char *) calloc(total, 1);
    REQUIRE(buf != NULL);
    memcpy(buf, KAS_MAGIC, 8);
    put_le(buf + 8, (uint64_t) major, 2);
    put_le(buf + 10, (uint64_t) minor, 2);
    put_le(buf + 12, n, 4);
    put_le(buf + 16, total, 8);
    offset = 64 + 64 * n;
    for (j = 0; j < n; j++) {
        buf[64 + 64 * j] = (unsigned char) items[j].type;
        put_le(buf + 64 + 64 * j + 8, offset, 8);
        put_le(buf + 64 + 64 * j + 16, strlen(items[j].key), 8);
        memcpy(buf + offset, items[j].key, strlen(items[j].key));
        offset += strlen(items[j].key);
    }
    REQUIRE(offset == keys_end);
    for (j = 0; j < n; j++) {
        offset = (offset + 7) & ~(size_t) 7;
        put_le(buf + 64 + 64 * j + 24, offset, 8);
        put_le(buf + 64 + 64 * j + 32, items[j].len, 8);
        fill_pattern(buf + offset, items[j].len * type_sizes[items[j].type], items[j].seed);
        offset += items[j].len * type_sizes[items[j].type];
    }
    *size = total;
    return buf;
}

/* Opens bytes from a temporary FILE*; returns the open error. */
static int
open_bytes(kastore_t *s, FILE **f, const void *data, size_t size, int flags)
{
    *f = temp_with(data, size);
    return kastore_openf(s, *f, "r", flags);
}

/* Gets every item; returns the first error. Frees owned copies. Also checks
 * that every key and array the store describes lies inside the store. */
static int
get_everything(kastore_t *s)
{
    const kaitem_t *item;
    void *array;
    size_t j, len;
    int type, ret;

    for (j = 0; j < s->num_items; j++) {
        item = &s->items[j];
        CHECK(item->type >= 0 && item->type < KAS_NUM_TYPES);
        CHECK(item->key_start >= KAS_HEADER_SIZE && item->key_start <= s->file_size
              && item->key_len <= s->file_size - item->key_start);
        CHECK(item->array_start >= KAS_HEADER_SIZE && item->array_start <= s->file_size
              && item->array_len <= (s->file_size - item->array_start)
                                        / type_sizes[item->type % KAS_NUM_TYPES]);
    }
    for (j = 0; j < s->num_items; j++) {
        ret = kastore_get(s, s->items[j].key, s->items[j].key_len, &array, &len, &type);
        if (ret != 0) {
            return ret;
        }
        if (len != s->items[j].array_len || type != s->items[j].type) {
            return -1000;
        }
        if (s->flags & KAS_GET_TAKES_OWNERSHIP) {
            free(array);
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Tests that need no reference files                                        */
/* ------------------------------------------------------------------------ */

static void
test_version_and_strerror(void)
{
    kas_version_t v = kas_version();
    const char *seen[16];
    int err, k;

    CHECK(v.major == KAS_VERSION_MAJOR && v.major == 2);
    CHECK(v.minor == KAS_VERSION_MINOR && v.patch == KAS_VERSION_PATCH);
    CHECK(KAS_FILE_VERSION_MAJOR == 1 && KAS_FILE_VERSION_MINOR == 0);
    CHECK(KAS_ERR_BAD_FLAGS == -15 && KAS_ERR_EOF == -14 && KAS_ERR_GENERIC == -1);
    CHECK(KAS_READ_ALL == 1 && KAS_GET_TAKES_OWNERSHIP == 2 && KAS_BORROWS_ARRAY == 256);
    CHECK(KAS_NUM_TYPES == 10 && KAS_FLOAT64 == 9 && KAS_UINT16 == 3);
    errno = 0;
    for (err = 0; err >= -15; err--) {
        seen[-err] = kas_strerror(err);
        CHECK(seen[-err] != NULL && strlen(seen[-err]) > 0);
        for (k = 0; k < -err; k++) {
            CHECK(strcmp(seen[k], seen[-err]) != 0); /* one message per code */
        }
    }
    for (err = -16; err > -200; err--) {
        CHECK(kas_strerror(err) != NULL && strlen(kas_strerror(err)) > 0);
    }
    CHECK(kas_strerror(1) != NULL && kas_strerror(INT_MIN) != NULL);
}

static const size_t lengths[] = { 0, 1, 7, 8, 9, 100 };
#define NUM_LENGTHS (sizeof(lengths) / sizeof(*lengths))

/* Every type and several lengths, by every put route, read back every way. */
static void
test_round_trip(void)
{
    const int read_flags[] = { 0, KAS_READ_ALL, KAS_GET_TAKES_OWNERSHIP,
        KAS_READ_ALL | KAS_GET_TAKES_OWNERSHIP };
    unsigned char *data[KAS_NUM_TYPES][NUM_LENGTHS];
    char path[1200], key[64];
    kastore_t s;
    void *array;
    size_t len, li, j;
    int t, other, route, f, type;

    scratch_path(path, sizeof(path), "round_trip.kas");
    for (t = 0; t < KAS_NUM_TYPES; t++) {
        for (li = 0; li < NUM_LENGTHS; li++) {
            data[t][li] = (unsigned char *) xmalloc(lengths[li] * type_sizes[t]);
            fill_pattern(data[t][li], lengths[li] * type_sizes[t], (unsigned) (t * 10 + li));
        }
    }
    CHECK_RET(kastore_open(&s, path, "w", 0), 0);
    for (route = 0; route < 4; route++) {
        for (t = 0; t < KAS_NUM_TYPES; t++) {
            for (li = 0; li < NUM_LENGTHS; li++) {
                sprintf(key, "r%d/%s/%d", route, type_names[t], (int) lengths[li]);
                CHECK_RET(put_by(&s, key, t, data[t][li], lengths[li], route), 0);
            }
        }
    }
    CHECK(s.num_items == 4 * KAS_NUM_TYPES * NUM_LENGTHS);
    CHECK_RET(kastore_close(&s), 0);
    CHECK_RET(kastore_close(&s), 0); /* closing twice is harmless */

    for (f = 0; f < 4; f++) {
        CHECK_RET(kastore_open(&s, path, "r", read_flags[f]), 0);
        CHECK(s.mode == KAS_READ && s.num_items == 4 * KAS_NUM_TYPES * NUM_LENGTHS);
        CHECK(s.file_version[0] == 1 && s.file_version[1] == 0);
        for (j = 0; j < s.num_items; j++) {
            /* Items sorted by key; arrays loaded at open only with KAS_READ_ALL,
             * then 8-byte aligned. */
            CHECK(j == 0 || key_before(&s.items[j - 1], &s.items[j]));
            if (read_flags[f] & KAS_READ_ALL) {
                CHECK(s.items[j].array != NULL && (uintptr_t) s.items[j].array % 8 == 0);
            } else {
                CHECK(s.items[j].array == NULL);
            }
        }
        for (route = 0; route < 4; route++) {
            for (t = 0; t < KAS_NUM_TYPES; t++) {
                for (li = 0; li < NUM_LENGTHS; li++) {
                    sprintf(key, "r%d/%s/%d", route, type_names[t], (int) lengths[li]);
                    CHECK_RET(kastore_containss(&s, key), 1);
                    CHECK_RET(kastore_contains(&s, key, strlen(key) - 1), 0);
                    array = NULL;
                    len = 12345;
                    CHECK_RET(get_as(&s, key, t, &array, &len), 0);
                    CHECK(array != NULL && len == lengths[li]);
                    CHECK(array != NULL
                          && memcmp(array, data[t][li], len * type_sizes[t]) == 0);
                    if (read_flags[f] & KAS_GET_TAKES_OWNERSHIP) {
                        free(array);
                    }
                    for (other = 0; other < KAS_NUM_TYPES; other++) {
                        if (other != t) {
                            CHECK_RET(get_as(&s, key, other, &array, &len),
                                KAS_ERR_TYPE_MISMATCH);
                        }
                    }
                    CHECK_RET(kastore_gets(&s, key, &array, &len, &type), 0);
                    CHECK(type == t && len == lengths[li]);
                    if (read_flags[f] & KAS_GET_TAKES_OWNERSHIP) {
                        free(array);
                    }
                }
            }
        }
        CHECK_RET(kastore_gets(&s, "r0/int8", &array, &len, &type), KAS_ERR_KEY_NOT_FOUND);
        CHECK_RET(kastore_containss(&s, "zzz"), 0);
        CHECK_RET(kastore_puts_int8(&s, "new", NULL, 0, 0), KAS_ERR_ILLEGAL_OPERATION);
        CHECK_RET(kastore_oputs(&s, "new", NULL, 0, KAS_INT8, 0), KAS_ERR_ILLEGAL_OPERATION);
        CHECK_RET(kastore_close(&s), 0);
    }
    for (t = 0; t < KAS_NUM_TYPES; t++) {
        for (li = 0; li < NUM_LENGTHS; li++) {
            free(data[t][li]);
        }
    }
}

/* Borrowed arrays are written as they are at close; copies as at put. */
static void
test_borrow_and_copy(void)
{
    int32_t borrowed[4] = { 1, 2, 3, 4 }, copied[4] = { 1, 2, 3, 4 };
    int32_t *a;
    size_t len;
    char path[1200];
    kastore_t s;

    scratch_path(path, sizeof(path), "borrow.kas");
    CHECK_RET(kastore_open(&s, path, "w", 0), 0);
    CHECK_RET(kastore_puts_int32(&s, "borrowed", borrowed, 4, KAS_BORROWS_ARRAY), 0);
    CHECK_RET(kastore_puts_int32(&s, "copied", copied, 4, 0), 0);
    borrowed[0] = copied[0] = 100;
    CHECK_RET(kastore_close(&s), 0);
    CHECK_RET(kastore_open(&s, path, "r", KAS_READ_ALL), 0);
    CHECK_RET(kastore_gets_int32(&s, "borrowed", &a, &len), 0);
    CHECK(len == 4 && a[0] == 100 && a[3] == 4);
    CHECK_RET(kastore_gets_int32(&s, "copied", &a, &len), 0);
    CHECK(len == 4 && a[0] == 1 && a[3] == 4);
    CHECK_RET(kastore_close(&s), 0);
}

/* With KAS_GET_TAKES_OWNERSHIP every get returns a new block to free. */
static void
test_get_takes_ownership(void)
{
    const int flags[] = { KAS_GET_TAKES_OWNERSHIP, KAS_GET_TAKES_OWNERSHIP | KAS_READ_ALL };
    double values[3] = { 0.5, -1.0, 2.0 };
    double *a, *b;
    size_t len, k;
    char path[1200];
    kastore_t s;

    scratch_path(path, sizeof(path), "ownership.kas");
    CHECK_RET(kastore_open(&s, path, "w", 0), 0);
    CHECK_RET(kastore_puts_float64(&s, "x", values, 3, 0), 0);
    CHECK_RET(kastore_puts_float64(&s, "never_read", values, 3, 0), 0);
    CHECK_RET(kastore_puts_float64(&s, "empty", values, 0, 0), 0);
    CHECK_RET(kastore_close(&s), 0);
    for (k = 0; k < 2; k++) {
        CHECK_RET(kastore_open(&s, path, "r", flags[k]), 0);
        CHECK_RET(kastore_gets_float64(&s, "x", &a, &len), 0);
        CHECK_RET(kastore_gets_float64(&s, "x", &b, &len), 0);
        CHECK(a != b && len == 3 && memcmp(a, values, sizeof(values)) == 0);
        CHECK(memcmp(b, values, sizeof(values)) == 0);
        a[0] = 42; /* ours now */
        CHECK_RET(kastore_close(&s), 0);
        CHECK(a[0] == 42 && b[1] == -1.0); /* still valid after close */
        free(a);
        free(b);
        CHECK_RET(kastore_open(&s, path, "r", flags[k]), 0);
        CHECK_RET(kastore_gets_float64(&s, "empty", &a, &len), 0);
        CHECK(a != NULL && len == 0);
        free(a);
        CHECK_RET(kastore_gets_int8(&s, "x", (int8_t **) &b, &len), KAS_ERR_TYPE_MISMATCH);
        CHECK_RET(kastore_close(&s), 0);
    }
}

static void
test_open_errors(const char *testdata)
{
    const char *bad_modes[] = { "", "R", "W", "read", "rw", "write", "rb", "wb", "r+" };
    const int bad_flags[] = { 4, 5, 8, KAS_BORROWS_ARRAY, -1, INT_MIN };
    char path[1200];
    kastore_t s;
    FILE *f;
    size_t j;

    for (j = 0; j < sizeof(bad_modes) / sizeof(*bad_modes); j++) {
        CHECK_RET(kastore_open(&s, "whatever.kas", bad_modes[j], 0), KAS_ERR_BAD_MODE);
        CHECK_RET(kastore_close(&s), 0);
        CHECK_RET(kastore_openf(&s, NULL, bad_modes[j], 0), KAS_ERR_BAD_MODE);
        CHECK_RET(kastore_close(&s), 0);
    }
    CHECK_RET(kastore_open(&s, "whatever.kas", NULL, 0), KAS_ERR_BAD_MODE);
    CHECK_RET(kastore_close(&s), 0);
    CHECK_RET(kastore_openf(&s, NULL, "a", 0), KAS_ERR_BAD_MODE); /* no append on FILE* */
    CHECK_RET(kastore_close(&s), 0);
    for (j = 0; j < sizeof(bad_flags) / sizeof(*bad_flags); j++) {
        CHECK_RET(kastore_open(&s, "whatever.kas", "r", bad_flags[j]), KAS_ERR_BAD_FLAGS);
        CHECK_RET(kastore_close(&s), 0);
        CHECK_RET(kastore_openf(&s, NULL, "r", bad_flags[j]), KAS_ERR_BAD_FLAGS);
        CHECK_RET(kastore_close(&s), 0);
    }

    /* I/O errors: errno says which, and kas_strerror repeats it. */
    scratch_path(path, sizeof(path), "no/such/dir/file.kas");
    errno = 0;
    CHECK_RET(kastore_open(&s, path, "r", 0), KAS_ERR_IO);
    CHECK(errno != 0 && strcmp(kas_strerror(KAS_ERR_IO), strerror(errno)) == 0);
    CHECK_RET(kastore_close(&s), 0);
    CHECK_RET(kastore_open(&s, path, "w", 0), KAS_ERR_IO);
    CHECK_RET(kastore_close(&s), 0);
    CHECK_RET(kastore_open(&s, path, "a", 0), KAS_ERR_IO);
    CHECK_RET(kastore_close(&s), 0);
    CHECK_RET(kastore_open(&s, scratch_dir, "r", KAS_READ_ALL), KAS_ERR_IO); /* a directory */
    CHECK_RET(kastore_close(&s), 0);
    if (testdata != NULL) {
        CHECK_RET(kastore_open(&s, testdata, "r", 0), KAS_ERR_IO);
        CHECK_RET(kastore_close(&s), 0);
    }

    /* An empty file: nothing to read is KAS_ERR_EOF, in every mode. */
    scratch_path(path, sizeof(path), "empty_file.kas");
    write_bytes(path, "", 0);
    CHECK_RET(kastore_open(&s, path, "r", 0), KAS_ERR_EOF);
    CHECK_RET(kastore_close(&s), 0);
    CHECK_RET(kastore_open(&s, path, "r", KAS_READ_ALL), KAS_ERR_EOF);
    CHECK_RET(kastore_close(&s), 0);
    CHECK_RET(kastore_open(&s, path, "a", 0), KAS_ERR_EOF);
    CHECK_RET(kastore_close(&s), 0);
    CHECK_RET(open_bytes(&s, &f, "", 0, KAS_READ_ALL), KAS_ERR_EOF);
    CHECK_RET(kastore_close(&s), 0);
    fclose(f);
    CHECK_RET(open_bytes(&s, &f, "\211KAS", 4, 0), KAS_ERR_BAD_FILE_FORMAT); /* partial */
    CHECK_RET(kastore_close(&s), 0);
    fclose(f);

    /* A FILE* opened for writing cannot be read from. */
    scratch_path(path, sizeof(path), "write_only.kas");
    f = fopen(path, "wb");
    REQUIRE(f != NULL);
    CHECK_RET(kastore_openf(&s, f, "r", 0), KAS_ERR_IO);
    CHECK_RET(kastore_close(&s), 0);
    fclose(f);
}

static void
test_put_errors(void)
{
    uint32_t one[] = { 1 };
    uint32_t *owned;
    char path[1200];
    kastore_t s;
    void *array;
    size_t len;
    int type;
    FILE *f;

    scratch_path(path, sizeof(path), "put_errors.kas");
    CHECK_RET(kastore_open(&s, path, "w", 0), 0);
    CHECK_RET(kastore_put(&s, "", 0, one, 1, KAS_UINT32, 0), KAS_ERR_EMPTY_KEY);
    CHECK_RET(kastore_put(&s, "b", 0, one, 1, KAS_UINT32, 0), KAS_ERR_EMPTY_KEY);
    CHECK_RET(kastore_oputs(&s, "", NULL, 1, KAS_UINT32, 0), KAS_ERR_EMPTY_KEY);
    CHECK_RET(kastore_puts(&s, "a", one, 1, -1, 0), KAS_ERR_BAD_TYPE);
    CHECK_RET(kastore_puts(&s, "a", one, 1, KAS_NUM_TYPES, 0), KAS_ERR_BAD_TYPE);
    CHECK_RET(kastore_puts(&s, "a", one, 1, KAS_NUM_TYPES + 1, 0), KAS_ERR_BAD_TYPE);
    CHECK_RET(kastore_oputs(&s, "a", NULL, 1, -2, 0), KAS_ERR_BAD_TYPE);
    CHECK_RET(kastore_oputs(&s, "a", NULL, 1, KAS_NUM_TYPES, 0), KAS_ERR_BAD_TYPE);
    CHECK_RET(kastore_puts(&s, "a", one, 1, KAS_UINT32, 5), KAS_ERR_BAD_FLAGS);
    CHECK_RET(kastore_puts(&s, "a", one, 1, KAS_UINT32, KAS_READ_ALL), KAS_ERR_BAD_FLAGS);
    CHECK_RET(kastore_oputs(&s, "a", NULL, 1, KAS_UINT32, KAS_BORROWS_ARRAY),
        KAS_ERR_BAD_FLAGS);
    CHECK_RET(kastore_puts(&s, "a", one, SIZE_MAX / 2, KAS_UINT32, 0), KAS_ERR_NO_MEMORY);
    CHECK(s.num_items == 0);

    /* Duplicates: equal to the last key, or to an earlier one out of order. */
    CHECK_RET(kastore_puts_uint32(&s, "b", one, 1, 0), 0);
    CHECK_RET(kastore_puts_uint32(&s, "b", one, 1, 0), KAS_ERR_DUPLICATE_KEY);
    CHECK_RET(kastore_puts_uint32(&s, "c", one, 1, 0), 0);
    CHECK_RET(kastore_puts_uint32(&s, "b", one, 1, KAS_BORROWS_ARRAY), KAS_ERR_DUPLICATE_KEY);
    CHECK_RET(kastore_puts_uint32(&s, "a", one, 1, 0), 0);
    CHECK_RET(kastore_puts_uint32(&s, "a", one, 1, 0), KAS_ERR_DUPLICATE_KEY);
    CHECK_RET(kastore_puts_uint32(&s, "c", one, 1, 0), KAS_ERR_DUPLICATE_KEY);
    owned = (uint32_t *) xmalloc(sizeof(uint32_t));
    CHECK_RET(kastore_oputs_uint32(&s, "c", owned, 1, 0), KAS_ERR_DUPLICATE_KEY);
    free(owned); /* refused, so still ours */
    CHECK(s.num_items == 3);

    /* Reading functions are not for write mode. */
    CHECK_RET(kastore_gets(&s, "a", &array, &len, &type), KAS_ERR_ILLEGAL_OPERATION);
    CHECK_RET(kastore_containss(&s, "a"), KAS_ERR_ILLEGAL_OPERATION);
    CHECK_RET(kastore_close(&s), 0);

    CHECK_RET(kastore_open(&s, path, "r", 0), 0);
    CHECK(s.num_items == 3);
    if (s.num_items == 3) {
        CHECK(s.items[0].key[0] == 'a' && s.items[1].key[0] == 'b');
        CHECK(s.items[2].key[0] == 'c');
    }
    CHECK_RET(kastore_close(&s), 0);

    /* A FILE* opened for reading cannot be written: the error comes at close. */
    f = fopen(path, "rb");
    REQUIRE(f != NULL);
    CHECK_RET(kastore_openf(&s, f, "w", 0), 0);
    CHECK_RET(kastore_puts_uint32(&s, "a", one, 1, 0), 0);
    CHECK_RET(kastore_close(&s), KAS_ERR_IO);
    fclose(f);
}

/* Many keys in a scrambled order: sorted once at close, duplicates found. */
static void
test_many_keys(void)
{
    enum { N = 20000 };
    char (*keys)[16] = (char (*)[16]) xmalloc(N * sizeof(*keys));
    int64_t *values = (int64_t *) xmalloc(N * sizeof(int64_t));
    size_t *order = (size_t *) xmalloc(N * sizeof(size_t));
    size_t j, k, tmp, len;
    int64_t *a;
    char path[1200];
    kastore_t s;

    for (j = 0; j < N; j++) {
        sprintf(keys[j], "k%lu", (unsigned long) (j * 7919 % 100003));
        values[j] = (int64_t) j;
        order[j] = j;
    }
    for (j = N - 1; j > 0; j--) {
        k = (size_t) (rng() % (j + 1));
        tmp = order[j];
        order[j] = order[k];
        order[k] = tmp;
    }
    scratch_path(path, sizeof(path), "many.kas");
    CHECK_RET(kastore_open(&s, path, "w", 0), 0);
    for (j = 0; j < N; j++) {
        CHECK_RET(kastore_puts_int64(&s, keys[order[j]], &values[order[j]], 1,
                      KAS_BORROWS_ARRAY),
            0);
        if (j % 997 == 0) {
            CHECK_RET(kastore_puts_int64(&s, keys[order[j / 2]], values, 1, 0),
                KAS_ERR_DUPLICATE_KEY);
        }
    }
    CHECK(s.num_items == N);
    CHECK_RET(kastore_close(&s), 0);
    CHECK_RET(kastore_open(&s, path, "r", KAS_READ_ALL), 0);
    CHECK(s.num_items == N);
    for (j = 1; j < s.num_items; j++) {
        CHECK(key_before(&s.items[j - 1], &s.items[j]));
    }
    for (j = 0; j < N; j++) {
        CHECK_RET(kastore_gets_int64(&s, keys[j], &a, &len), 0);
        CHECK(len == 1 && a[0] == (int64_t) j);
    }
    CHECK_RET(kastore_close(&s), 0);
    free(keys);
    free(values);
    free(order);
}

/* Stores written one after another into one FILE* read back one by one:
 * each open must leave the FILE exactly at the end of its store. */
static void
test_back_to_back(void)
{
    const int flags[] = { KAS_READ_ALL, 0, KAS_GET_TAKES_OWNERSHIP };
    int16_t values[5] = { -1, 2, -3, 4, -5 };
    long ends[4];
    int16_t *a;
    size_t len;
    kastore_t s;
    FILE *f = tmpfile();
    int j, k;

    REQUIRE(f != NULL);
    for (j = 0; j < 4; j++) {
        CHECK_RET(kastore_openf(&s, f, "w", 0), 0);
        for (k = 0; k < j; k++) { /* store j has j keys; store 0 is empty */
            char key[8];
            sprintf(key, "s%dk%d", j, k);
            CHECK_RET(kastore_puts_int16(&s, key, values, (size_t) (k + j) % 6, 0), 0);
        }
        CHECK_RET(kastore_close(&s), 0);
        ends[j] = ftell(f);
    }
    for (k = 0; k < 3; k++) {
        rewind(f);
        for (j = 0; j < 4; j++) {
            CHECK_RET(kastore_openf(&s, f, "r", flags[(j + k) % 3]), 0);
            CHECK(s.num_items == (size_t) j);
            CHECK(ftell(f) == ends[j]);
            if (j == 3) {
                CHECK_RET(kastore_gets_int16(&s, "s3k2", &a, &len), 0);
                CHECK(len == 5 && a[4] == -5);
                if (s.flags & KAS_GET_TAKES_OWNERSHIP) {
                    free(a);
                }
                CHECK(ftell(f) == ends[j]); /* a lazy get puts the FILE back */
            }
            CHECK_RET(get_everything(&s), 0);
            CHECK_RET(kastore_close(&s), 0);
        }
        CHECK_RET(kastore_openf(&s, f, "r", flags[k]), KAS_ERR_EOF);
        CHECK_RET(kastore_close(&s), 0);
    }
    fclose(f);
}

static void
test_append(void)
{
    uint8_t bytes[3] = { 7, 8, 9 };
    uint8_t *a;
    size_t len;
    char path[1200];
    kastore_t s;

    scratch_path(path, sizeof(path), "append.kas");
    CHECK_RET(kastore_open(&s, path, "w", 0), 0);
    CHECK_RET(kastore_puts_uint8(&s, "m", bytes, 3, 0), 0);
    CHECK_RET(kastore_close(&s), 0);
    CHECK_RET(kastore_open(&s, path, "a", 0), 0);
    CHECK(s.mode == KAS_WRITE && s.num_items == 1);
    CHECK_RET(kastore_puts_uint8(&s, "a", bytes, 1, 0), 0);
    CHECK_RET(kastore_puts_uint8(&s, "z", bytes, 2, 0), 0);
    CHECK_RET(kastore_puts_uint8(&s, "m", bytes, 2, 0), KAS_ERR_DUPLICATE_KEY);
    CHECK_RET(kastore_close(&s), 0);
    CHECK_RET(kastore_open(&s, path, "r", 0), 0);
    CHECK(s.num_items == 3);
    CHECK_RET(kastore_gets_uint8(&s, "m", &a, &len), 0);
    CHECK(len == 3 && a[0] == 7 && a[2] == 9);
    CHECK_RET(kastore_gets_uint8(&s, "z", &a, &len), 0);
    CHECK(len == 2 && a[1] == 8);
    CHECK_RET(kastore_close(&s), 0);
}

/* Files laid out by hand: things the library's writer never produces. */
static void
test_handmade_files(void)
{
    const handmade_t unsorted[] = { { "zeta", KAS_INT32, 3, 1 }, { "alpha", KAS_UINT8, 5, 2 },
        { "mid", KAS_FLOAT64, 20000, 3 }, { "al", KAS_INT8, 0, 4 } };
    const handmade_t twice[] = { { "x", KAS_INT8, 1, 1 }, { "y", KAS_INT8, 1, 2 },
        { "x", KAS_INT8, 2, 3 } };
    const int flags[] = { 0, KAS_READ_ALL };
    unsigned char *buf, *with_tail, *expected;
    char path[1200];
    void *array;
    size_t size, len, j;
    kastore_t s;
    int k, type;
    FILE *f;

    for (k = 0; k < 2; k++) {
        /* Keys out of order are still found (the Python reader accepts them). */
        buf = handmade_store(unsorted, 4, 1, 0, &size);
        CHECK_RET(open_bytes(&s, &f, buf, size, flags[k]), 0);
        CHECK(s.num_items == 4 && s.items[0].key_len == 2 && s.items[3].key[0] == 'z');
        for (j = 0; j < 4; j++) {
            CHECK_RET(kastore_gets(&s, unsorted[j].key, &array, &len, &type), 0);
            expected = (unsigned char *) xmalloc(len * type_sizes[type]);
            fill_pattern(expected, len * type_sizes[type], unsorted[j].seed);
            CHECK(type == unsorted[j].type && len == unsorted[j].len);
            CHECK(memcmp(array, expected, len * type_sizes[type]) == 0);
            free(expected);
        }
        CHECK_RET(kastore_close(&s), 0);
        fclose(f);

        /* A newer minor version reads as ours; major versions do not. */
        buf[10] = 7;
        CHECK_RET(open_bytes(&s, &f, buf, size, flags[k]), 0);
        CHECK(s.file_version[0] == 1 && s.file_version[1] == 7);
        CHECK_RET(kastore_close(&s), 0);
        fclose(f);
        buf[8] = 2;
        CHECK_RET(open_bytes(&s, &f, buf, size, flags[k]), KAS_ERR_VERSION_TOO_NEW);
        CHECK_RET(kastore_close(&s), 0);
        fclose(f);
        buf[8] = 0;
        CHECK_RET(open_bytes(&s, &f, buf, size, flags[k]), KAS_ERR_VERSION_TOO_OLD);
        CHECK_RET(kastore_close(&s), 0);
        fclose(f);
        free(buf);

        buf = handmade_store(twice, 3, 1, 0, &size);
        CHECK_RET(open_bytes(&s, &f, buf, size, flags[k]), KAS_ERR_BAD_FILE_FORMAT);
        CHECK_RET(kastore_close(&s), 0);
        fclose(f);
        free(buf);

        /* Bytes after a store: an error for a file name, the next store's
         * business for a FILE*. */
        buf = handmade_store(unsorted, 4, 1, 0, &size);
        with_tail = (unsigned char *) xmalloc(size + 1);
        memcpy(with_tail, buf, size);
        with_tail[size] = 0;
        scratch_path(path, sizeof(path), "tail.kas");
        write_bytes(path, with_tail, size + 1);
        CHECK_RET(kastore_open(&s, path, "r", flags[k]), KAS_ERR_BAD_FILE_FORMAT);
        CHECK_RET(kastore_close(&s), 0);
        CHECK_RET(open_bytes(&s, &f, with_tail, size + 1, flags[k]), 0);
        CHECK(ftell(f) == (long) size);
        CHECK_RET(kastore_close(&s), 0);
        CHECK_RET(kastore_openf(&s, f, "r", flags[k]), KAS_ERR_BAD_FILE_FORMAT);
        CHECK_RET(kastore_close(&s), 0);
        fclose(f);
        write_bytes(path, buf, size); /* and without the tail, fine */
        CHECK_RET(kastore_open(&s, path, "r", flags[k]), 0);
        CHECK_RET(kastore_close(&s), 0);
        free(with_tail);
        free(buf);
    }

    /* Lengths so large that offset arithmetic would wrap around to a layout
     * that looks right; and bytes inside the claimed size but after the last
     * array. All must be refused. */
    for (k = 0; k < 4; k++) {
        const handmade_t two[] = { { "ab", KAS_INT64, 1, 1 }, { "cd", KAS_INT8, 0, 2 } };
        const handmade_t one[] = { { "abc", KAS_INT8, 0, 1 } };
        if (k == 3) { /* the store ends at 131, the padding of the array would not */
            buf = handmade_store(one, 1, 1, 0, &size);
            REQUIRE(size == 136);
            size = 131;
            put_le(buf + 16, size, 8);
            put_le(buf + 64 + 32, (uint64_t) 0 - 5, 8); /* back to 131 (mod 2^64) */
        } else {
            buf = handmade_store(two, 2, 1, 0, &size);
            REQUIRE(size == 208);
        }
        if (k == 0) { /* key 0 ends at 92 (mod 2^64), key 1 then runs to 196 */
            put_le(buf + 64 + 16, (uint64_t) 0 - 100, 8);
            put_le(buf + 128 + 8, 92, 8);
            put_le(buf + 128 + 16, 104, 8);
        } else if (k == 1) { /* 2^61 + 1 int64s take 8 bytes (mod 2^64) */
            put_le(buf + 64 + 32, ((uint64_t) 1 << 61) + 1, 8);
        } else if (k == 2) {
            buf = (unsigned char *) realloc(buf, size + 8);
            REQUIRE(buf != NULL);
            memset(buf + size, 0, 8);
            size += 8;
            put_le(buf + 16, size, 8);
        }
        for (j = 0; j < 2; j++) {
            CHECK_RET(open_bytes(&s, &f, buf, size, flags[j]), KAS_ERR_BAD_FILE_FORMAT);
            if (s.items != NULL) { /* wrongly opened: show what that would cost */
                get_everything(&s);
            }
            CHECK_RET(kastore_close(&s), 0);
            fclose(f);
        }
        free(buf);
    }

    /* A lazily read store whose file shrinks after open fails cleanly (the
     * array cut short is larger than any stdio buffer, so it is read again). */
    buf = handmade_store(unsorted, 4, 1, 0, &size);
    scratch_path(path, sizeof(path), "shrinks.kas");
    write_bytes(path, buf, size);
    CHECK_RET(kastore_open(&s, path, "r", 0), 0);
    write_bytes(path, buf, size - 4);
    CHECK_RET(kastore_gets(&s, "mid", &array, &len, &type), KAS_ERR_BAD_FILE_FORMAT);
    CHECK_RET(kastore_gets(&s, "zeta", &array, &len, &type), 0);
    CHECK_RET(kastore_gets(&s, "al", &array, &len, &type), 0);
    CHECK_RET(kastore_close(&s), 0);
    free(buf);

    /* print_state shows the items, in both modes. */
    f = tmpfile();
    REQUIRE(f != NULL);
    scratch_path(path, sizeof(path), "round_trip.kas");
    CHECK_RET(kastore_open(&s, path, "r", 0), 0);
    kastore_print_state(&s, f);
    CHECK_RET(kastore_close(&s), 0);
    CHECK_RET(kastore_open(&s, path, "w", 0), 0);
    CHECK_RET(kastore_puts_int8(&s, "k", NULL, 0, 0), 0);
    kastore_print_state(&s, f);
    CHECK_RET(kastore_close(&s), 0);
    CHECK(ftell(f) > 1000);
    fclose(f);
}

/* ------------------------------------------------------------------------ */
/* The shared reference files                                                */
/* ------------------------------------------------------------------------ */

/* The top-level keys of a JSON object, and the values that are strings. Just
 * enough JSON for the manifests: nested values are skipped. */
typedef struct {
    size_t n;
    char name[2048][128];
    char value[2048][64];
} json_keys_t;

static void
json_top_level(const char *text, json_keys_t *out)
{
    const char *p = text, *start, *q;
    int depth = 0;
    size_t len;

    out->n = 0;
    while (*p != '\0') {
        if (*p == '{' || *p == '[') {
            depth++;
        } else if (*p == '}' || *p == ']') {
            depth--;
        } else if (*p == '"') {
            start = ++p;
            while (*p != '\0' && *p != '"') {
                p += (*p == '\\' && p[1] != '\0') ? 2 : 1;
            }
            len = (size_t) (p - start);
            for (q = p + 1; *q == ' ' || *q == '\n' || *q == '\r' || *q == '\t'; q++) {
            }
            if (depth == 1 && *q == ':') {
                REQUIRE(out->n < 2048 && len < 128);
                memcpy(out->name[out->n], start, len);
                out->name[out->n][len] = '\0';
                out->value[out->n][0] = '\0';
                out->n++;
            } else if (depth == 1 && out->n > 0) {
                REQUIRE(len < 64);
                memcpy(out->value[out->n - 1], start, len);
                out->value[out->n - 1][len] = '\0';
            }
            if (*p == '\0') {
                break;
            }
        }
        p++;
    }
}

static json_keys_t json_keys;

static void
load_json_keys(const char *dir, const char *name)
{
    char path[1200];
    size_t size;
    unsigned char *text;

    join(path, sizeof(path), dir, name);
    text = file_bytes(path, &size);
    text = (unsigned char *) realloc(text, size + 1);
    REQUIRE(text != NULL);
    text[size] = '\0';
    json_top_level((const char *) text, &json_keys);
    free(text);
}

static int
error_code(const char *exception)
{
    if (strcmp(exception, "FileFormatError") == 0) {
        return KAS_ERR_BAD_FILE_FORMAT;
    }
    if (strcmp(exception, "VersionTooOldError") == 0) {
        return KAS_ERR_VERSION_TOO_OLD;
    }
    if (strcmp(exception, "VersionTooNewError") == 0) {
        return KAS_ERR_VERSION_TOO_NEW;
    }
    if (strcmp(exception, "EOFError") == 0) {
        return KAS_ERR_EOF;
    }
    fprintf(stderr, "unknown exception name %s\n", exception);
    exit(1);
}

static void
test_malformed(const char *testdata)
{
    const int flags[] = { 0, KAS_READ_ALL, KAS_GET_TAKES_OWNERSHIP };
    char dir[1200], path[1200];
    unsigned char *data;
    size_t j, size, k;
    int expected, failures_before;
    kastore_t s;
    FILE *f;

    join(dir, sizeof(dir), testdata, "reference/malformed");
    load_json_keys(dir, "expected.json");
    for (j = 0; j < json_keys.n; j++) {
        expected = error_code(json_keys.value[j]);
        join(path, sizeof(path), dir, json_keys.name[j]);
        data = file_bytes(path, &size);
        failures_before = failures;
        for (k = 0; k < 3; k++) {
            CHECK_RET(kastore_open(&s, path, "r", flags[k]), expected);
            CHECK_RET(kastore_close(&s), 0);
            CHECK_RET(open_bytes(&s, &f, data, size, flags[k]), expected);
            CHECK_RET(kastore_close(&s), 0);
            fclose(f);
        }
        if (failures > failures_before) {
            fprintf(stderr, "  (checking %s)\n", json_keys.name[j]);
        }
        free(data);
    }
    printf("files reference/malformed %lu\n", (unsigned long) json_keys.n);
}

/* Opens path and writes its items again, key by key, through the C writer;
 * the bytes must be those of the file. Twice: once reading everything and
 * putting borrowed arrays in reverse order, once reading lazily and putting
 * copies in order. */
static void
check_rewrite(const char *path)
{
    unsigned char *original, *rewritten;
    size_t size, new_size, j, len, n;
    kastore_t in, out;
    void *array;
    int pass, type;
    FILE *f;

    original = file_bytes(path, &size);
    for (pass = 0; pass < 2; pass++) {
        f = tmpfile();
        REQUIRE(f != NULL);
        CHECK_RET(kastore_open(&in, path, "r", pass == 0 ? KAS_READ_ALL : 0), 0);
        CHECK_RET(kastore_openf(&out, f, "w", 0), 0);
        n = in.num_items;
        for (j = 0; j < n; j++) {
            const kaitem_t *item = &in.items[pass == 0 ? n - 1 - j : j];
            CHECK_RET(kastore_get(&in, item->key, item->key_len, &array, &len, &type), 0);
            CHECK(pass == 1 || array == item->array);
            CHECK_RET(kastore_put(&out, item->key, item->key_len, array, len, type,
                          pass == 0 ? KAS_BORROWS_ARRAY : 0),
                0);
        }
        CHECK_RET(kastore_close(&out), 0); /* before in: it borrows from in */
        CHECK_RET(kastore_close(&in), 0);
        rewind(f);
        rewritten = stream_bytes(f, &new_size);
        fclose(f);
        if (new_size != size || memcmp(original, rewritten, size) != 0) {
            fprintf(stderr, "rewrite of %s differs (pass %d, %lu vs %lu bytes)\n", path,
                pass, (unsigned long) new_size, (unsigned long) size);
            failures++;
        }
        free(rewritten);
    }
    free(original);
}

static void
test_rewrites(const char *testdata, const char *folder, const char *manifest,
    const char *suffix)
{
    char dir[1200], name[256], path[1200];
    size_t j;

    join(dir, sizeof(dir), testdata, folder);
    load_json_keys(dir, manifest);
    for (j = 0; j < json_keys.n; j++) {
        sprintf(name, "%s%s", json_keys.name[j], suffix);
        join(path, sizeof(path), dir, name);
        check_rewrite(path);
    }
    printf("files %s %lu\n", folder, (unsigned long) json_keys.n);
}

/* reference/v1/all_types_N_elements.kas: key "<type>" holds 0 .. N-1. */
static void
test_v1_values(const char *testdata)
{
    char dir[1200], path[1200];
    unsigned long n_elements;
    size_t j, len, i;
    void *array;
    int t, ok;
    kastore_t s;

    join(dir, sizeof(dir), testdata, "reference/v1");
    load_json_keys(dir, "expected.json");
    for (j = 0; j < json_keys.n; j++) {
        REQUIRE(sscanf(json_keys.name[j], "all_types_%lu_elements", &n_elements) == 1);
        join(path, sizeof(path), dir, json_keys.name[j]);
        check_rewrite(path);
        CHECK_RET(kastore_open(&s, path, "r", KAS_READ_ALL), 0);
        CHECK(s.num_items == KAS_NUM_TYPES);
        for (t = 0; t < KAS_NUM_TYPES; t++) {
            CHECK_RET(get_as(&s, type_names[t], t, &array, &len), 0);
            CHECK(len == n_elements);
            for (i = 0, ok = 1; i < len; i++) {
                switch (t) {
                    case KAS_INT8: ok &= ((int8_t *) array)[i] == (int8_t) i; break;
                    case KAS_UINT8: ok &= ((uint8_t *) array)[i] == (uint8_t) i; break;
                    case KAS_INT16: ok &= ((int16_t *) array)[i] == (int16_t) i; break;
                    case KAS_UINT16: ok &= ((uint16_t *) array)[i] == (uint16_t) i; break;
                    case KAS_INT32: ok &= ((int32_t *) array)[i] == (int32_t) i; break;
                    case KAS_UINT32: ok &= ((uint32_t *) array)[i] == (uint32_t) i; break;
                    case KAS_INT64: ok &= ((int64_t *) array)[i] == (int64_t) i; break;
                    case KAS_UINT64: ok &= ((uint64_t *) array)[i] == (uint64_t) i; break;
                    case KAS_FLOAT32: ok &= ((float *) array)[i] == (float) i; break;
                    default: ok &= ((double *) array)[i] == (double) i; break;
                }
            }
            CHECK(ok);
        }
        CHECK_RET(kastore_close(&s), 0);
    }
    printf("files reference/v1 %lu\n", (unsigned long) json_keys.n);
}

/* ------------------------------------------------------------------------ */
/* Fuzzing                                                                   */
/* ------------------------------------------------------------------------ */

static int
is_error_code(int ret)
{
    return ret <= KAS_ERR_GENERIC && ret >= KAS_ERR_BAD_FLAGS;
}

/* Opens a damaged copy of a valid store with every flag combination and
 * gets every key: each call must succeed or return an error code, and the
 * sanitizers check that nothing is touched out of bounds. */
static void
fuzz_one(const unsigned char *data, size_t size, size_t *opened)
{
    const int flags[] = { 0, KAS_READ_ALL, KAS_GET_TAKES_OWNERSHIP,
        KAS_READ_ALL | KAS_GET_TAKES_OWNERSHIP };
    kastore_t s;
    FILE *f;
    int k, ret;

    f = temp_with(data, size);
    for (k = 0; k < 4; k++) {
        rewind(f);
        ret = kastore_openf(&s, f, "r", flags[k]);
        CHECK(ret == 0 || is_error_code(ret));
        if (ret == 0) {
            (*opened)++;
            CHECK(ftell(f) == (long) s.file_size);
            ret = get_everything(&s);
            CHECK(ret == 0 || is_error_code(ret));
        }
        CHECK_RET(kastore_close(&s), 0);
    }
    fclose(f);
}

static void
test_fuzz(const unsigned char *valid, size_t size, int rounds)
{
    static const uint64_t interesting[] = { 0, 1, 7, 8, 63, 64, 65, 0x7fffffff, 0xffffffffu,
        0x100000000u, 0x7fffffffffffffffu, 0x8000000000000000u, 0xfffffffffffffff8u,
        0xffffffffffffffffu };
    unsigned char *copy = (unsigned char *) xmalloc(size);
    size_t opened = 0, pos, cut, head;
    int r, m, mutations, j;

    head = size < 64 * 8 ? size : 64 * 8; /* the header and first descriptors */
    for (r = 0; r < rounds; r++) {
        memcpy(copy, valid, size);
        cut = size;
        mutations = 1 + (int) (rng() % 3);
        for (m = 0; m < mutations; m++) {
            switch (rng() % 4) {
                case 0: /* flip bits of one byte, mostly in the layout fields */
                    pos = (size_t) (rng() % (rng() % 2 ? head : size));
                    copy[pos] ^= (unsigned char) (1 + rng() % 255);
                    break;
                case 1: /* an interesting value in an 8-byte field */
                    pos = (size_t) (rng() % (head / 8)) * 8;
                    if (pos + 8 <= size) {
                        uint64_t v = interesting[rng() % (sizeof(interesting) / 8)];
                        if (rng() % 2) {
                            v += (uint64_t) size - 8 + rng() % 16;
                        }
                        for (j = 0; j < 8; j++) {
                            copy[pos + (size_t) j] = (unsigned char) (v >> (8 * j));
                        }
                    }
                    break;
                case 2: /* truncate */
                    cut = (size_t) (rng() % (size + 1));
                    break;
                default: /* a random byte anywhere */
                    copy[rng() % size] = (unsigned char) rng();
                    break;
            }
        }
        fuzz_one(copy, cut, &opened);
    }
    /* Some damage goes unnoticed (array contents): make sure both outcomes ran. */
    CHECK(opened > 0 && opened < 4 * (size_t) rounds);
    free(copy);
}

/* ------------------------------------------------------------------------ */

static int
is_error_code(int ret);

static int
run_stream(const char *expected_count, const char *expected_error)
{
    const int flags[] = { KAS_READ_ALL, 0, KAS_GET_TAKES_OWNERSHIP };
    long count = 0;
    kastore_t s;
    int ret;

    while ((ret = kastore_openf(&s, stdin, "r", flags[count % 3])) == 0) {
        CHECK_RET(get_everything(&s), 0);
        CHECK_RET(kastore_close(&s), 0);
        count++;
    }
    CHECK_RET(kastore_close(&s), 0);
    if (strcmp(expected_count, "any") == 0) {
        CHECK(is_error_code(ret));
    } else {
        CHECK_RET(ret, atoi(expected_error));
        if (count != atol(expected_count)) {
            fprintf(stderr, "read %ld stores from the stream, expected %s\n", count,
                expected_count);
            failures++;
        }
    }
    printf("stores %ld\n", count);
    return failures == 0 ? 0 : 1;
}

int
main(int argc, char **argv)
{
    const char *testdata;
    unsigned char *valid;
    char path[1200];
    size_t size;

    if (argc == 4 && strcmp(argv[1], "--stream") == 0) {
        return run_stream(argv[2], argv[3]);
    }
    if (argc != 3) {
        fprintf(stderr, "usage: %s TESTDATA_DIR|- SCRATCH_DIR\n"
                        "       %s --stream COUNT CODE\n",
            argv[0], argv[0]);
        return 2;
    }
    testdata = strcmp(argv[1], "-") == 0 ? NULL : argv[1];
    REQUIRE(strlen(argv[2]) < sizeof(scratch_dir));
    strcpy(scratch_dir, argv[2]);

    test_version_and_strerror();
    test_round_trip();
    test_borrow_and_copy();
    test_get_takes_ownership();
    test_open_errors(testdata);
    test_put_errors();
    test_many_keys();
    test_back_to_back();
    test_append();
    test_handmade_files();

    scratch_path(path, sizeof(path), "round_trip.kas");
    valid = file_bytes(path, &size);
    test_fuzz(valid, size, 1500);
    free(valid);

    if (testdata != NULL) {
        test_malformed(testdata);
        test_rewrites(testdata, "written-by-reference", "manifest.json", ".kas");
        test_rewrites(testdata, "tskit", "manifest.json", "");
        test_v1_values(testdata);
        join(path, sizeof(path), testdata, "tskit/single_population.trees");
        valid = file_bytes(path, &size);
        test_fuzz(valid, size, 1500);
        free(valid);
    }
    if (failures > 0) {
        fprintf(stderr, "%d checks failed\n", failures);
        return 1;
    }
    printf("all checks passed\n");
    return 0;
}
