/*
 * kastore.h -- a C library for the kastore format, C API version 2.
 *
 * A kastore file maps byte-string keys to one-dimensional arrays of one of
 * ten fixed-size numeric types (KAS_INT8 ... KAS_FLOAT64). The layout is
 * described in kastore/_format.py; this library reads and writes exactly
 * the bytes the Python package does. The library is this header plus
 * kastore.c, needs only a C99 compiler and libc, and also compiles as C++.
 *
 * Life of a store
 *   kastore_t store;
 *   int ret = kastore_open(&store, "data.kas", "r", KAS_READ_ALL);
 *   ...                      use the store if ret == 0 ...
 *   kastore_close(&store);   always, even when open failed
 *
 *   Every function returns 0 (or, for contains, 0/1) on success and a
 *   negative KAS_ERR_* code on failure; kas_strerror() describes a code.
 *
 * Modes
 *   "r"  read. Without KAS_READ_ALL, the header, descriptors and keys are
 *        read at open and each array is read (with a seek) on its first get.
 *        With KAS_READ_ALL, the whole store is read at open: one fread after
 *        the header, or, on a stream that cannot seek (a pipe), pieces that
 *        grow only as data arrives. A stream that cannot seek is always read
 *        whole (KAS_READ_ALL is then added to self->flags). Reading stops at
 *        the store's last byte, so stores written back to back can be read
 *        one after another from the same FILE*; kastore_open (by name) also
 *        requires the file to end there.
 *   "w"  write. Put functions add key-array pairs; the file is written when
 *        kastore_close() is called, which returns any error that occurs.
 *   "a"  append (kastore_open only): the existing file's items are read,
 *        new ones may be put, and the whole store is rewritten at close.
 *   Reading functions in write mode, and put functions in read mode, fail
 *   with KAS_ERR_ILLEGAL_OPERATION.
 *
 * Getting arrays
 *   kastore_get / kastore_gets give the array, its length in elements and its
 *   type; the typed variants (kastore_gets_float64, ...) also check the type.
 *   Returned arrays belong to the store and stay valid until kastore_close(),
 *   unless the store was opened with KAS_GET_TAKES_OWNERSHIP: then every get
 *   returns a new malloc'd copy that the caller must free().
 *
 * Putting arrays
 *   kastore_put / kastore_puts (and typed variants) copy the array, or, with
 *   the KAS_BORROWS_ARRAY flag, keep a pointer to it: it must then stay alive
 *   and unchanged until kastore_close(). kastore_oput / kastore_oputs take a
 *   malloc'd array and free it at close (only if they return 0). Keys are
 *   always copied; they must be non-empty and unique.
 *
 * Reading items directly
 *   After a successful open in read mode, self->items[0 .. num_items-1] are
 *   sorted by key (bytewise). key/key_len/type/array_len are always set;
 *   array is set for every item when KAS_READ_ALL was given (pointing into
 *   one buffer that holds the file's bytes after the header, 8-byte
 *   aligned), and otherwise only once the item has been got.
 *
 * Arrays are stored little-endian, as in memory on little-endian hosts; this
 * library does not byte-swap, so big-endian hosts are not supported.
 */
#ifndef KASTORE_H
#define KASTORE_H

#ifdef __cplusplus
extern "C" {
#endif

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __GNUC__
#define KAS_WARN_UNUSED __attribute__((warn_unused_result))
#define KAS_UNUSED(x) KAS_UNUSED_##x __attribute__((__unused__))
#else
#define KAS_WARN_UNUSED
#define KAS_UNUSED(x) KAS_UNUSED_##x
#endif

/* Error codes: every failing function returns one of these. */
#define KAS_ERR_GENERIC -1           /* no more specific code applies */
#define KAS_ERR_IO -2                /* an I/O error; see errno */
#define KAS_ERR_BAD_MODE -3          /* unknown mode string */
#define KAS_ERR_NO_MEMORY -4         /* out of memory */
#define KAS_ERR_BAD_FILE_FORMAT -5   /* not a valid kastore file */
#define KAS_ERR_VERSION_TOO_OLD -6   /* file's major version is too old */
#define KAS_ERR_VERSION_TOO_NEW -7   /* file's major version is too new */
#define KAS_ERR_BAD_TYPE -8          /* unknown type code */
#define KAS_ERR_EMPTY_KEY -9         /* key of length zero */
#define KAS_ERR_DUPLICATE_KEY -10    /* key already in the store */
#define KAS_ERR_KEY_NOT_FOUND -11    /* no such key */
#define KAS_ERR_ILLEGAL_OPERATION -12 /* not allowed in this mode */
#define KAS_ERR_TYPE_MISMATCH -13    /* typed get of an array of another type */
#define KAS_ERR_EOF -14              /* no data at all where a store should start */
#define KAS_ERR_BAD_FLAGS -15        /* unknown flags */

/* Flags for kastore_open / kastore_openf. */
#define KAS_READ_ALL (1 << 0)
#define KAS_GET_TAKES_OWNERSHIP (1 << 1)

/* Flag for kastore_put and its variants. */
#define KAS_BORROWS_ARRAY (1 << 8)

/* Type codes, as stored in the file. */
#define KAS_INT8 0
#define KAS_UINT8 1
#define KAS_INT16 2
#define KAS_UINT16 3
#define KAS_INT32 4
#define KAS_UINT32 5
#define KAS_INT64 6
#define KAS_UINT64 7
#define KAS_FLOAT32 8
#define KAS_FLOAT64 9
#define KAS_NUM_TYPES 10

/* Values of kastore_t.mode. */
#define KAS_READ 1
#define KAS_WRITE 2

/* The file format version this library reads and writes. */
#define KAS_FILE_VERSION_MAJOR 1
#define KAS_FILE_VERSION_MINOR 0

/* The version of this C API (semantic versioning, covering the ABI). */
#define KAS_VERSION_MAJOR 2
#define KAS_VERSION_MINOR 1
#define KAS_VERSION_PATCH 1

#define KAS_HEADER_SIZE 64
#define KAS_ITEM_DESCRIPTOR_SIZE 64
#define KAS_MAGIC "\211KAS\r\n\032\n"
#define KAS_ARRAY_ALIGN 8

/* One key-array pair. */
typedef struct {
    int type;         /* KAS_INT8 ... KAS_FLOAT64 */
    size_t key_len;   /* in bytes */
    size_t array_len; /* in elements */
    char *key;        /* key_len bytes, not NUL-terminated */
    void *array;      /* see "Reading items directly" above */
    /* Private. */
    size_t key_start;   /* reading: file offset; writing: offset in the key arena */
    size_t array_start; /* file offset */
    int owns_array;     /* the store free()s array at close */
} kaitem_t;

/* A store of key-array pairs backed by a file. */
typedef struct {
    int flags;            /* the open flags */
    int mode;             /* KAS_READ or KAS_WRITE */
    int file_version[2];  /* major, minor (read mode) */
    size_t num_items;
    kaitem_t *items;      /* sorted by key in read mode */
    FILE *file;
    size_t file_size;     /* bytes of the store (read mode) */
    long file_offset;     /* where the store starts in file (lazy read mode) */
    /* Private. */
    char *read_buffer;    /* file bytes after the header (KAS_READ_ALL), or
                             descriptors and keys (lazy reading) */
    int owns_file;        /* opened by kastore_open: closed at kastore_close */
    size_t items_capacity;
    char *key_arena;      /* writing: all keys, back to back */
    size_t key_arena_len;
    size_t key_arena_capacity;
    int sorted;           /* writing: keys put so far are in strictly increasing order */
    uint64_t *index;      /* writing: hash table of the keys, once out of order */
    size_t index_capacity;
} kastore_t;

/* Version of this library, from kas_version(). */
typedef struct {
    int major;
    int minor;
    int patch;
} kas_version_t;

/* Opening and closing. */
int kastore_open(kastore_t *self, const char *filename, const char *mode, int flags);
int kastore_openf(kastore_t *self, FILE *file, const char *mode, int flags);
int kastore_close(kastore_t *self);

/* 1 if the key is present, 0 if not, a negative error code on failure. */
int kastore_contains(kastore_t *self, const char *key, size_t key_len);
int kastore_containss(kastore_t *self, const char *key);

/* Getting arrays. */
int kastore_get(kastore_t *self, const char *key, size_t key_len, void **array,
    size_t *array_len, int *type);
int kastore_gets(
    kastore_t *self, const char *key, void **array, size_t *array_len, int *type);
int kastore_gets_int8(
    kastore_t *self, const char *key, int8_t **array, size_t *array_len);
int kastore_gets_uint8(
    kastore_t *self, const char *key, uint8_t **array, size_t *array_len);
int kastore_gets_int16(
    kastore_t *self, const char *key, int16_t **array, size_t *array_len);
int kastore_gets_uint16(
    kastore_t *self, const char *key, uint16_t **array, size_t *array_len);
int kastore_gets_int32(
    kastore_t *self, const char *key, int32_t **array, size_t *array_len);
int kastore_gets_uint32(
    kastore_t *self, const char *key, uint32_t **array, size_t *array_len);
int kastore_gets_int64(
    kastore_t *self, const char *key, int64_t **array, size_t *array_len);
int kastore_gets_uint64(
    kastore_t *self, const char *key, uint64_t **array, size_t *array_len);
int kastore_gets_float32(
    kastore_t *self, const char *key, float **array, size_t *array_len);
int kastore_gets_float64(
    kastore_t *self, const char *key, double **array, size_t *array_len);

/* Putting arrays: copied, or borrowed with KAS_BORROWS_ARRAY. */
int kastore_put(kastore_t *self, const char *key, size_t key_len, const void *array,
    size_t array_len, int type, int flags);
int kastore_puts(kastore_t *self, const char *key, const void *array, size_t array_len,
    int type, int flags);
int kastore_puts_int8(
    kastore_t *self, const char *key, const int8_t *array, size_t array_len, int flags);
int kastore_puts_uint8(kastore_t *self, const char *key, const uint8_t *array,
    size_t array_len, int flags);
int kastore_puts_int16(kastore_t *self, const char *key, const int16_t *array,
    size_t array_len, int flags);
int kastore_puts_uint16(kastore_t *self, const char *key, const uint16_t *array,
    size_t array_len, int flags);
int kastore_puts_int32(kastore_t *self, const char *key, const int32_t *array,
    size_t array_len, int flags);
int kastore_puts_uint32(kastore_t *self, const char *key, const uint32_t *array,
    size_t array_len, int flags);
int kastore_puts_int64(kastore_t *self, const char *key, const int64_t *array,
    size_t array_len, int flags);
int kastore_puts_uint64(kastore_t *self, const char *key, const uint64_t *array,
    size_t array_len, int flags);
int kastore_puts_float32(
    kastore_t *self, const char *key, const float *array, size_t array_len, int flags);
int kastore_puts_float64(
    kastore_t *self, const char *key, const double *array, size_t array_len, int flags);

/* Own-puts: the store takes a malloc'd array and frees it at close. flags must
 * be 0. Ownership passes only when the call returns 0. */
int kastore_oput(kastore_t *self, const char *key, size_t key_len, void *array,
    size_t array_len, int type, int flags);
int kastore_oputs(kastore_t *self, const char *key, void *array, size_t array_len,
    int type, int flags);
int kastore_oputs_int8(
    kastore_t *self, const char *key, int8_t *array, size_t array_len, int flags);
int kastore_oputs_uint8(
    kastore_t *self, const char *key, uint8_t *array, size_t array_len, int flags);
int kastore_oputs_int16(
    kastore_t *self, const char *key, int16_t *array, size_t array_len, int flags);
int kastore_oputs_uint16(
    kastore_t *self, const char *key, uint16_t *array, size_t array_len, int flags);
int kastore_oputs_int32(
    kastore_t *self, const char *key, int32_t *array, size_t array_len, int flags);
int kastore_oputs_uint32(
    kastore_t *self, const char *key, uint32_t *array, size_t array_len, int flags);
int kastore_oputs_int64(
    kastore_t *self, const char *key, int64_t *array, size_t array_len, int flags);
int kastore_oputs_uint64(
    kastore_t *self, const char *key, uint64_t *array, size_t array_len, int flags);
int kastore_oputs_float32(
    kastore_t *self, const char *key, float *array, size_t array_len, int flags);
int kastore_oputs_float64(
    kastore_t *self, const char *key, double *array, size_t array_len, int flags);

/* Miscellaneous. */
void kastore_print_state(kastore_t *self, FILE *out);
const char *kas_strerror(int err);
kas_version_t kas_version(void);

/* Frees pointer (if not NULL) and sets it to NULL; needs <stdlib.h>. */
#define kas_safe_free(pointer)                                                         \
    do {                                                                               \
        if ((pointer) != NULL) {                                                       \
            free(pointer);                                                             \
            (pointer) = NULL;                                                          \
        }                                                                              \
    } while (0)

#ifdef __cplusplus
}
#endif

#endif /* KASTORE_H */
