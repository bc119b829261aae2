/*
 * kastore.c -- the kastore C library. The API is described in kastore.h and
 * the file format in kastore/_format.py.
 *
 * Reading trusts nothing in a file until it has been checked: the header's
 * size is compared with the bytes the file really has before anything is
 * allocated for it (or, on a stream whose size cannot be known, memory grows
 * only with the data that arrives), and every descriptor must put its key
 * and array exactly where the format's layout says they go. Once that holds,
 * every key and array lies inside the bytes read and nothing overlaps.
 *
 * Writing keeps the items in put order, sorts them once at close (unless they
 * were put in order already, which is checked on every put) and lays them out
 * as the Python writer does, so both produce identical bytes.
 */
#include "kastore.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* Reading a stream of unknown size starts with this much, then doubles. */
#define KAS_FIRST_PIECE ((size_t) 1 << 20)
/* Small pieces are gathered into a buffer of this size before fwrite. */
#define KAS_STAGING_SIZE ((size_t) 1 << 16)
#define KAS_OPEN_FLAGS (KAS_READ_ALL | KAS_GET_TAKES_OWNERSHIP)

/* Bytes per element, indexed by type code. */
static const size_t type_sizes[KAS_NUM_TYPES] = { 1, 1, 2, 2, 4, 4, 8, 8, 4, 8 };

/* ------------------------------------------------------------------------ */
/* Little-endian integers and key order                                      */
/* ------------------------------------------------------------------------ */

static uint64_t
load_le(const unsigned char *p, int size)
{
    uint64_t value = 0;
    int j;

    for (j = size - 1; j >= 0; j--) {
        value = (value << 8) | p[j];
    }
    return value;
}

static void
store_le(unsigned char *p, uint64_t value, int size)
{
    int j;

    for (j = 0; j < size; j++) {
        p[j] = (unsigned char) (value >> (8 * j));
    }
}

/* Bytewise order: memcmp on the common length, then the shorter key first. */
static int
compare_keys(const char *a, size_t a_len, const char *b, size_t b_len)
{
    size_t n = a_len < b_len ? a_len : b_len;
    int c = n > 0 ? memcmp(a, b, n) : 0;

    if (c != 0) {
        return c;
    }
    return (a_len > b_len) - (a_len < b_len);
}

static int
compare_items(const void *a, const void *b)
{
    const kaitem_t *ia = (const kaitem_t *) a;
    const kaitem_t *ib = (const kaitem_t *) b;

    return compare_keys(ia->key, ia->key_len, ib->key, ib->key_len);
}

/* What the sort orders: 8 bytes of the key, big-endian, so that comparing
 * two words as integers compares those bytes; equal words fall back to the
 * whole keys. */
typedef struct {
    uint64_t word;
    const kaitem_t *item;
} sort_entry_t;

static int
compare_entries(const void *a, const void *b)
{
    const sort_entry_t *ea = (const sort_entry_t *) a;
    const sort_entry_t *eb = (const sort_entry_t *) b;

    if (ea->word != eb->word) {
        return ea->word < eb->word ? -1 : 1;
    }
    return compare_items(ea->item, eb->item);
}

/* Sorts entries by word: a least-significant-digit radix sort, a byte per
 * pass, skipping the bytes that are the same in every word. Returns the
 * array (entries or spare) that holds the result. */
static sort_entry_t *
radix_sort(sort_entry_t *entries, sort_entry_t *spare, size_t n)
{
    size_t counts[256], j, c, position, count;
    sort_entry_t *swap;
    int shift;

    for (shift = 0; shift < 64; shift += 8) {
        memset(counts, 0, sizeof(counts));
        for (j = 0; j < n; j++) {
            counts[(entries[j].word >> shift) & 0xff]++;
        }
        if (counts[(entries[0].word >> shift) & 0xff] == n) {
            continue;
        }
        for (c = 0, position = 0; c < 256; c++) {
            count = counts[c];
            counts[c] = position;
            position += count;
        }
        for (j = 0; j < n; j++) {
            spare[counts[(entries[j].word >> shift) & 0xff]++] = entries[j];
        }
        swap = entries;
        entries = spare;
        spare = swap;
    }
    return entries;
}

/* Sorts the items by key and returns duplicate_error if two keys are equal.
 *
 * A qsort comparing whole keys with memcmp costs several times what the rest
 * of writing a store does, and keys often share a long prefix
 * ("table_00017/column"). So the bytes all keys share are skipped, the next
 * 8 bytes of each key (zero padded) become a big-endian integer, and those
 * are radix sorted; only keys with equal integers are compared whole. The
 * order is the same: where two integers differ, the first differing byte is
 * a byte of both keys, or the end of the shorter key, which sorts first as a
 * zero pad does. */
static int
sort_items(kastore_t *self, int duplicate_error)
{
    kaitem_t *items = self->items;
    kaitem_t *sorted;
    sort_entry_t *entries, *result;
    size_t n = self->num_items;
    size_t j, k, shared, run;
    int ret = 0;

    if (n < 2) {
        return 0;
    }
    shared = items[0].key_len;
    for (j = 1; j < n && shared > 0; j++) {
        for (k = 0; k < shared && k < items[j].key_len && items[j].key[k] == items[0].key[k];
             k++) {
        }
        shared = k;
    }
    entries = (sort_entry_t *) malloc(2 * n * sizeof(*entries));
    sorted = (kaitem_t *) malloc(n * sizeof(*sorted));
    if (entries == NULL || sorted == NULL) {
        free(entries);
        free(sorted);
        return KAS_ERR_NO_MEMORY;
    }
    for (j = 0; j < n; j++) {
        entries[j].word = 0;
        for (k = shared; k < shared + 8; k++) {
            entries[j].word = (entries[j].word << 8)
                              | (k < items[j].key_len ? (unsigned char) items[j].key[k] : 0);
        }
        entries[j].item = &items[j];
    }
    result = radix_sort(entries, entries + n, n);
    for (j = 0; j < n; j = k) {
        for (k = j + 1; k < n && result[k].word == result[j].word; k++) {
        }
        run = k - j;
        if (run > 1) {
            qsort(result + j, run, sizeof(*result), compare_entries);
            for (k = j + 1; k < j + run; k++) {
                if (compare_items(result[k - 1].item, result[k].item) == 0) {
                    ret = duplicate_error;
                }
            }
        }
    }
    for (j = 0; j < n; j++) {
        sorted[j] = *result[j].item;
    }
    free(entries);
    /* items_capacity stays right: no more items are added once sorted. */
    free(self->items);
    self->items = sorted;
    return ret;
}

/* Sorts items read from a file, unless they are in order already (as every
 * writer following the format leaves them). */
static int
sort_read_items(kastore_t *self)
{
    size_t j;

    for (j = 1; j < self->num_items; j++) {
        if (compare_items(&self->items[j - 1], &self->items[j]) >= 0) {
            return sort_items(self, KAS_ERR_BAD_FILE_FORMAT);
        }
    }
    return 0;
}

/* Binary search of the sorted items. */
static kaitem_t *
find_item(const kastore_t *self, const char *key, size_t key_len)
{
    size_t lo = 0, hi = self->num_items, mid;
    int c;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        c = compare_keys(key, key_len, self->items[mid].key, self->items[mid].key_len);
        if (c == 0) {
            return &self->items[mid];
        }
        if (c < 0) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Reading                                                                   */
/* ------------------------------------------------------------------------ */

/* Reads exactly size bytes. Running out of data means the store is truncated. */
static int
read_exact(FILE *file, void *buf, size_t size)
{
    if (size > 0 && fread(buf, 1, size, file) != size) {
        return ferror(file) ? KAS_ERR_IO : KAS_ERR_BAD_FILE_FORMAT;
    }
    return 0;
}

/* Sets *remaining to the number of bytes between the position of file and its
 * end when the file can tell without being read (a regular file), and to 0
 * when it cannot (a pipe, a terminal): callers then read in bounded pieces.
 * The position is left where it was. */
static int
bytes_remaining(FILE *file, uint64_t *remaining)
{
    int saved_errno = errno;
    long here, end;

    *remaining = 0;
    here = ftell(file);
    if (here < 0) {
        errno = saved_errno; /* not seekable: not an error */
        return 0;
    }
    end = fseek(file, 0, SEEK_END) == 0 ? ftell(file) : -1;
    if (fseek(file, here, SEEK_SET) != 0) {
        return KAS_ERR_IO;
    }
    if (end > here) {
        *remaining = (uint64_t) (end - here);
    }
    errno = saved_errno;
    return 0;
}

/* Appends size bytes from file to the malloc'd block *buf, which holds *len
 * bytes. If known is 0 the size comes from an unchecked header, so the block
 * grows (doubling from KAS_FIRST_PIECE) only as the data really arrives;
 * otherwise it is read with one fread. */
static int
read_append(FILE *file, char **buf, size_t *len, size_t size, int known)
{
    size_t piece = known ? size : KAS_FIRST_PIECE;
    size_t want;
    char *grown;
    int ret;

    do {
        want = size < piece ? size : piece;
        /* One spare byte, so that an empty block is still a valid pointer. */
        grown = (char *) realloc(*buf, *len + want + 1);
        if (grown == NULL) {
            return KAS_ERR_NO_MEMORY;
        }
        *buf = grown;
        ret = read_exact(file, grown + *len, want);
        if (ret != 0) {
            return ret;
        }
        *len += want;
        size -= want;
        piece = piece > size / 2 ? size : 2 * piece;
    } while (size > 0);
    return 0;
}

/* Checks the magic number and version, and that the descriptors fit. */
static int
parse_header(
    kastore_t *self, const unsigned char *header, size_t *num_items, uint64_t *file_size)
{
    uint64_t n;

    if (memcmp(header, KAS_MAGIC, 8) != 0) {
        return KAS_ERR_BAD_FILE_FORMAT;
    }
    self->file_version[0] = (int) load_le(header + 8, 2);
    self->file_version[1] = (int) load_le(header + 10, 2);
    if (self->file_version[0] < KAS_FILE_VERSION_MAJOR) {
        return KAS_ERR_VERSION_TOO_OLD;
    }
    if (self->file_version[0] > KAS_FILE_VERSION_MAJOR) {
        return KAS_ERR_VERSION_TOO_NEW;
    }
    /* A newer minor version only adds compatible changes: it is read as ours. */
    n = load_le(header + 12, 4);
    *file_size = load_le(header + 16, 8);
    /* n < 2^32, so this cannot wrap; it bounds n by the claimed size. */
    if (*file_size < KAS_HEADER_SIZE + n * KAS_ITEM_DESCRIPTOR_SIZE) {
        return KAS_ERR_BAD_FILE_FORMAT;
    }
    *num_items = (size_t) n; /* size_t has at least 32 bits */
    return 0;
}

/* Checks the n descriptors at desc against the layout rules: keys packed in
 * order right after the descriptors, then arrays in the same order, each at
 * the next multiple of KAS_ARRAY_ALIGN, and the store ending where the last
 * array ends. Sets *keys_end to the file offset just past the last key.
 * Every subtraction below is from file_size, never past it, so nothing
 * wraps however large the numbers in the file are. */
static int
check_layout(const unsigned char *desc, size_t n, uint64_t file_size, uint64_t *keys_end)
{
    uint64_t offset = KAS_HEADER_SIZE + (uint64_t) n * KAS_ITEM_DESCRIPTOR_SIZE;
    uint64_t length, pad, item_size;
    const unsigned char *d;
    size_t j;

    for (j = 0; j < n; j++) {
        d = desc + j * KAS_ITEM_DESCRIPTOR_SIZE;
        if (d[0] >= KAS_NUM_TYPES) {
            return KAS_ERR_BAD_FILE_FORMAT;
        }
        length = load_le(d + 16, 8);
        if (load_le(d + 8, 8) != offset || length > file_size - offset) {
            return KAS_ERR_BAD_FILE_FORMAT;
        }
        offset += length;
    }
    *keys_end = offset;
    for (j = 0; j < n; j++) {
        d = desc + j * KAS_ITEM_DESCRIPTOR_SIZE;
        pad = (KAS_ARRAY_ALIGN - offset % KAS_ARRAY_ALIGN) % KAS_ARRAY_ALIGN;
        if (pad > file_size - offset) {
            return KAS_ERR_BAD_FILE_FORMAT;
        }
        offset += pad;
        item_size = type_sizes[d[0]];
        length = load_le(d + 32, 8);
        /* Divide instead of multiplying, so a huge length cannot wrap. */
        if (load_le(d + 24, 8) != offset || length > (file_size - offset) / item_size) {
            return KAS_ERR_BAD_FILE_FORMAT;
        }
        offset += length * item_size;
    }
    return offset == file_size ? 0 : KAS_ERR_BAD_FILE_FORMAT;
}

/* Fills self->items from the checked descriptors. self->read_buffer holds
 * the file's bytes from the end of the header: descriptors, then keys, then
 * (with_arrays) the arrays. No per-item allocation: keys and arrays point
 * into that block. */
static int
fill_items(kastore_t *self, size_t n, int with_arrays)
{
    const unsigned char *d;
    kaitem_t *item;
    size_t j;

    self->items = (kaitem_t *) calloc(n + 1, sizeof(kaitem_t));
    if (self->items == NULL) {
        return KAS_ERR_NO_MEMORY;
    }
    self->items_capacity = n + 1;
    self->num_items = n;
    for (j = 0; j < n; j++) {
        d = (const unsigned char *) self->read_buffer + j * KAS_ITEM_DESCRIPTOR_SIZE;
        item = &self->items[j];
        /* All these fit in size_t: they are below file_size, which does. */
        item->type = d[0];
        item->key_start = (size_t) load_le(d + 8, 8);
        item->key_len = (size_t) load_le(d + 16, 8);
        item->array_start = (size_t) load_le(d + 24, 8);
        item->array_len = (size_t) load_le(d + 32, 8);
        item->key = self->read_buffer + (item->key_start - KAS_HEADER_SIZE);
        if (with_arrays) {
            item->array = self->read_buffer + (item->array_start - KAS_HEADER_SIZE);
        }
    }
    return 0;
}

/* Reads a store from self->file, which is at its first byte. exact: the
 * file must end where the store does (a store opened by file name). */
static int
open_read(kastore_t *self, int exact)
{
    unsigned char header[KAS_HEADER_SIZE];
    uint64_t file_size, available, keys_end;
    size_t n, got, body_size, len = 0;
    int saved_errno = errno;
    long start = ftell(self->file); /* -1 for a pipe: then it is read whole */
    int ret, known, lazy;

    errno = saved_errno;
    got = fread(header, 1, KAS_HEADER_SIZE, self->file);
    if (got < KAS_HEADER_SIZE) {
        if (ferror(self->file)) {
            return KAS_ERR_IO;
        }
        return got == 0 ? KAS_ERR_EOF : KAS_ERR_BAD_FILE_FORMAT;
    }
    ret = parse_header(self, header, &n, &file_size);
    if (ret != 0) {
        return ret;
    }
    ret = bytes_remaining(self->file, &available);
    if (ret != 0) {
        return ret;
    }
    known = available > 0;
    if (known && (file_size - KAS_HEADER_SIZE > available
                     || (exact && file_size - KAS_HEADER_SIZE != available))) {
        return KAS_ERR_BAD_FILE_FORMAT;
    }
    if (file_size > SIZE_MAX / 2) {
        return KAS_ERR_NO_MEMORY;
    }
    self->file_size = (size_t) file_size;
    body_size = self->file_size - KAS_HEADER_SIZE;

    /* Reading arrays on demand needs seeks; a stream is read whole. */
    lazy = !(self->flags & KAS_READ_ALL) && known && start >= 0;
    if (!lazy) {
        self->flags |= KAS_READ_ALL;
        ret = read_append(self->file, &self->read_buffer, &len, body_size, known);
        if (ret == 0) {
            ret = check_layout(
                (const unsigned char *) self->read_buffer, n, file_size, &keys_end);
        }
    } else {
        self->file_offset = start;
        ret = read_append(
            self->file, &self->read_buffer, &len, n * KAS_ITEM_DESCRIPTOR_SIZE, 1);
        if (ret == 0) {
            ret = check_layout(
                (const unsigned char *) self->read_buffer, n, file_size, &keys_end);
        }
        if (ret == 0) {
            ret = read_append(self->file, &self->read_buffer, &len,
                (size_t) keys_end - KAS_HEADER_SIZE - len, 1);
        }
        /* Leave the file at the end of the store, as KAS_READ_ALL does. */
        if (ret == 0 && fseek(self->file, start + (long) file_size, SEEK_SET) != 0) {
            ret = KAS_ERR_IO;
        }
    }
    if (ret == 0) {
        ret = fill_items(self, n, !lazy);
    }
    if (ret == 0) {
        ret = sort_read_items(self);
    }
    if (ret == 0 && exact && !known && fgetc(self->file) != EOF) {
        ret = KAS_ERR_BAD_FILE_FORMAT;
    }
    if (ret == 0 && ferror(self->file)) {
        ret = KAS_ERR_IO;
    }
    return ret;
}

/* Reads one array of a lazily read store into dest, then puts the file back
 * at the end of the store. */
static int
read_array(kastore_t *self, const kaitem_t *item, void *dest, size_t size)
{
    /* Both offsets are within the file's size, which ftell gave as a long. */
    long where = self->file_offset + (long) item->array_start;
    long end = self->file_offset + (long) self->file_size;
    int ret;

    if (self->file == NULL || fseek(self->file, where, SEEK_SET) != 0) {
        return KAS_ERR_IO;
    }
    ret = read_exact(self->file, dest, size);
    if (fseek(self->file, end, SEEK_SET) != 0 && ret == 0) {
        ret = KAS_ERR_IO;
    }
    return ret;
}

/* Finds key and returns its array; want_type is a type code to insist on,
 * or -1. The type is checked before anything is read or allocated. */
static int
get_item(kastore_t *self, const char *key, size_t key_len, int want_type, void **array,
    size_t *array_len, int *type)
{
    kaitem_t *item;
    size_t size;
    void *data;
    int ret;

    if (self->mode != KAS_READ) {
        return KAS_ERR_ILLEGAL_OPERATION;
    }
    item = find_item(self, key, key_len);
    if (item == NULL) {
        return KAS_ERR_KEY_NOT_FOUND;
    }
    if (want_type >= 0 && item->type != want_type) {
        return KAS_ERR_TYPE_MISMATCH;
    }
    size = item->array_len * type_sizes[item->type];
    data = item->array;
    if (data == NULL || (self->flags & KAS_GET_TAKES_OWNERSHIP)) {
        /* A new block: the caller's to free, or kept in the item until close. */
        data = malloc(size > 0 ? size : 1);
        if (data == NULL) {
            return KAS_ERR_NO_MEMORY;
        }
        if (item->array != NULL) {
            memcpy(data, item->array, size);
            ret = 0;
        } else {
            ret = read_array(self, item, data, size);
        }
        if (ret != 0) {
            free(data);
            return ret;
        }
        if (!(self->flags & KAS_GET_TAKES_OWNERSHIP)) {
            item->array = data;
            item->owns_array = 1;
        }
    }
    *array = data;
    if (array_len != NULL) {
        *array_len = item->array_len;
    }
    if (type != NULL) {
        *type = item->type;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Putting                                                                   */
/* ------------------------------------------------------------------------ */

/* The hash table of keys (writing only) is open addressing with linear
 * probing. A slot holds 0 (empty) or, for item number j, (j + 1) in its low
 * 32 bits and the high 32 bits of the key's hash in its high bits: most
 * probes that meet another key are settled there, without touching the
 * item, which for keys put in random order is a cache miss. */
static uint64_t
hash_key(const char *key, size_t key_len)
{
    uint64_t h = 14695981039346656037u; /* FNV-1a */
    size_t j;

    for (j = 0; j < key_len; j++) {
        h = (h ^ (unsigned char) key[j]) * 1099511628211u;
    }
    return h ^ (h >> 29); /* mix high bits into the low bits used for the slot */
}

static uint64_t *
index_slot(const kastore_t *self, const char *key, size_t key_len, uint64_t hash)
{
    size_t mask = self->index_capacity - 1;
    size_t slot = (size_t) hash & mask;
    uint64_t tag = hash >> 32;
    const kaitem_t *item;
    uint64_t value;

    while ((value = self->index[slot]) != 0) {
        if (value >> 32 == tag) {
            item = &self->items[(value & 0xffffffffu) - 1];
            if (compare_keys(item->key, item->key_len, key, key_len) == 0) {
                break;
            }
        }
        slot = (slot + 1) & mask;
    }
    return &self->index[slot];
}

/* Makes room in the hash table for count items (at most half full), building
 * it from all items the first time. It is only needed once keys stop arriving
 * in increasing order: until then a duplicate would have to equal the last
 * key. */
static int
index_reserve(kastore_t *self, size_t count)
{
    size_t capacity = self->index_capacity > 0 ? self->index_capacity : 64;
    uint64_t *old = self->index;
    uint64_t hash;
    size_t j;

    if (self->index != NULL && 2 * count <= self->index_capacity) {
        return 0;
    }
    while (capacity < 2 * count) {
        capacity *= 2;
    }
    self->index = (uint64_t *) calloc(capacity, sizeof(uint64_t));
    if (self->index == NULL) {
        self->index = old;
        return KAS_ERR_NO_MEMORY;
    }
    free(old);
    self->index_capacity = capacity;
    for (j = 0; j < self->num_items; j++) {
        hash = hash_key(self->items[j].key, self->items[j].key_len);
        *index_slot(self, self->items[j].key, self->items[j].key_len, hash)
            = (hash >> 32 << 32) | (j + 1);
    }
    return 0;
}

/* Copies key into the key arena; sets *offset to where it went. Keys are
 * addressed by offset, so a move of the arena only needs the pointers redone. */
static int
arena_append(kastore_t *self, const char *key, size_t key_len, size_t *offset)
{
    size_t need, capacity;
    char *grown;
    size_t j;

    if (key_len > SIZE_MAX - self->key_arena_len) {
        return KAS_ERR_NO_MEMORY;
    }
    need = self->key_arena_len + key_len;
    if (need > self->key_arena_capacity) {
        capacity = self->key_arena_capacity > 0 ? self->key_arena_capacity : 4096;
        while (capacity < need) {
            capacity = capacity > SIZE_MAX / 2 ? need : 2 * capacity;
        }
        grown = (char *) realloc(self->key_arena, capacity);
        if (grown == NULL) {
            return KAS_ERR_NO_MEMORY;
        }
        self->key_arena = grown;
        self->key_arena_capacity = capacity;
        for (j = 0; j < self->num_items; j++) {
            self->items[j].key = grown + self->items[j].key_start;
        }
    }
    memcpy(self->key_arena + self->key_arena_len, key, key_len);
    *offset = self->key_arena_len;
    self->key_arena_len = need;
    return 0;
}

/* Adds an item whose arguments have been checked. On failure the store is
 * unchanged and array stays the caller's. */
static int
add_item(kastore_t *self, const char *key, size_t key_len, void *array, size_t array_len,
    int type, int owns_array)
{
    size_t n = self->num_items;
    kaitem_t *item;
    kaitem_t *grown;
    uint64_t *slot = NULL;
    uint64_t hash = 0;
    size_t capacity, offset;
    int ret, in_order;

    if (n >= UINT32_MAX) {
        return KAS_ERR_NO_MEMORY; /* the header counts items in 32 bits */
    }
    in_order = self->sorted
               && (n == 0
                      || compare_keys(self->items[n - 1].key, self->items[n - 1].key_len,
                             key, key_len)
                             < 0);
    if (!in_order || self->index != NULL) {
        ret = index_reserve(self, n + 1);
        if (ret != 0) {
            return ret;
        }
        hash = hash_key(key, key_len);
        slot = index_slot(self, key, key_len, hash);
        if (*slot != 0) {
            return KAS_ERR_DUPLICATE_KEY;
        }
    }
    if (n == self->items_capacity) {
        capacity = n > 0 ? 2 * n : 64;
        grown = (kaitem_t *) realloc(self->items, capacity * sizeof(kaitem_t));
        if (grown == NULL) {
            return KAS_ERR_NO_MEMORY;
        }
        self->items = grown;
        self->items_capacity = capacity;
    }
    ret = arena_append(self, key, key_len, &offset);
    if (ret != 0) {
        return ret;
    }
    item = &self->items[n];
    memset(item, 0, sizeof(*item));
    item->type = type;
    item->key_len = key_len;
    item->array_len = array_len;
    item->key = self->key_arena + offset;
    item->key_start = offset;
    item->array = array;
    item->owns_array = owns_array;
    self->num_items = n + 1;
    if (slot != NULL) {
        /* The table has not changed since the slot was found. */
        *slot = (hash >> 32 << 32) | (n + 1);
    }
    if (!in_order) {
        self->sorted = 0;
    }
    return 0;
}

/* Checks done by every put; sets *size to the array's size in bytes. */
static int
check_put(kastore_t *self, size_t key_len, size_t array_len, int type, int flags,
    int allowed_flags, size_t *size)
{
    if (self->mode != KAS_WRITE) {
        return KAS_ERR_ILLEGAL_OPERATION;
    }
    if (flags & ~allowed_flags) {
        return KAS_ERR_BAD_FLAGS;
    }
    if (type < 0 || type >= KAS_NUM_TYPES) {
        return KAS_ERR_BAD_TYPE;
    }
    if (key_len == 0) {
        return KAS_ERR_EMPTY_KEY;
    }
    if (array_len > SIZE_MAX / type_sizes[type]) {
        return KAS_ERR_NO_MEMORY; /* larger than any array in memory can be */
    }
    *size = array_len * type_sizes[type];
    return 0;
}

int
kastore_put(kastore_t *self, const char *key, size_t key_len, const void *array,
    size_t array_len, int type, int flags)
{
    size_t size = 0;
    void *data;
    int ret = check_put(self, key_len, array_len, type, flags, KAS_BORROWS_ARRAY, &size);

    if (ret != 0) {
        return ret;
    }
    if (flags & KAS_BORROWS_ARRAY) {
        /* Never written through: the const is only set aside to share the
         * field with owned arrays. */
        return add_item(self, key, key_len, (void *) array, array_len, type, 0);
    }
    data = malloc(size > 0 ? size : 1);
    if (data == NULL) {
        return KAS_ERR_NO_MEMORY;
    }
    if (size > 0) {
        memcpy(data, array, size);
    }
    ret = add_item(self, key, key_len, data, array_len, type, 1);
    if (ret != 0) {
        free(data);
    }
    return ret;
}

int
kastore_oput(kastore_t *self, const char *key, size_t key_len, void *array,
    size_t array_len, int type, int flags)
{
    size_t size = 0;
    int ret = check_put(self, key_len, array_len, type, flags, 0, &size);

    if (ret != 0) {
        return ret;
    }
    return add_item(self, key, key_len, array, array_len, type, 1);
}

int
kastore_puts(kastore_t *self, const char *key, const void *array, size_t array_len,
    int type, int flags)
{
    return kastore_put(self, key, strlen(key), array, array_len, type, flags);
}

int
kastore_oputs(kastore_t *self, const char *key, void *array, size_t array_len, int type,
    int flags)
{
    return kastore_oput(self, key, strlen(key), array, array_len, type, flags);
}

/* ------------------------------------------------------------------------ */
/* Writing                                                                   */
/* ------------------------------------------------------------------------ */

/* Gathers small pieces so that a store of many small arrays is not written
 * with an fwrite per piece; large pieces go straight to the file. */
typedef struct {
    FILE *file;
    char *buf;
    size_t len;
} kas_output_t;

static int
output_flush(kas_output_t *out)
{
    if (out->len > 0 && fwrite(out->buf, 1, out->len, out->file) != out->len) {
        return KAS_ERR_IO;
    }
    out->len = 0;
    return 0;
}

static int
output_write(kas_output_t *out, const void *data, size_t size)
{
    int ret;

    if (size > KAS_STAGING_SIZE - out->len) {
        ret = output_flush(out);
        if (ret != 0) {
            return ret;
        }
        if (size >= KAS_STAGING_SIZE) {
            return fwrite(data, 1, size, out->file) == size ? 0 : KAS_ERR_IO;
        }
    }
    if (size > 0) {
        memcpy(out->buf + out->len, data, size);
        out->len += size;
    }
    return 0;
}

/* Sorts and lays out the items, then writes the store. */
static int
write_store(kastore_t *self)
{
    static const char zeros[KAS_ARRAY_ALIGN] = { 0 };
    unsigned char block[KAS_ITEM_DESCRIPTOR_SIZE];
    kas_output_t out;
    kaitem_t *item;
    uint64_t offset, position;
    size_t j, n = self->num_items;
    int ret;

    if (!self->sorted) {
        /* The puts refused duplicates, so none can turn up here. */
        ret = sort_items(self, KAS_ERR_DUPLICATE_KEY);
        if (ret != 0) {
            return ret;
        }
        self->sorted = 1;
    }
    /* The layout: keys packed after the descriptors, then each array at the
     * next multiple of KAS_ARRAY_ALIGN; the store ends with the last array. */
    offset = KAS_HEADER_SIZE + (uint64_t) n * KAS_ITEM_DESCRIPTOR_SIZE;
    for (j = 0; j < n; j++) {
        self->items[j].key_start = (size_t) offset;
        offset += self->items[j].key_len;
    }
    for (j = 0; j < n; j++) {
        item = &self->items[j];
        offset += (KAS_ARRAY_ALIGN - offset % KAS_ARRAY_ALIGN) % KAS_ARRAY_ALIGN;
        item->array_start = (size_t) offset;
        offset += (uint64_t) item->array_len * type_sizes[item->type];
    }
    if (offset > SIZE_MAX) {
        return KAS_ERR_NO_MEMORY; /* only possible where size_t is narrower */
    }
    self->file_size = (size_t) offset;

    out.file = self->file;
    out.len = 0;
    out.buf = (char *) malloc(KAS_STAGING_SIZE);
    if (out.buf == NULL) {
        return KAS_ERR_NO_MEMORY;
    }
    memset(block, 0, sizeof(block));
    memcpy(block, KAS_MAGIC, 8);
    store_le(block + 8, KAS_FILE_VERSION_MAJOR, 2);
    store_le(block + 10, KAS_FILE_VERSION_MINOR, 2);
    store_le(block + 12, n, 4);
    store_le(block + 16, offset, 8);
    ret = output_write(&out, block, KAS_HEADER_SIZE);
    for (j = 0; j < n && ret == 0; j++) {
        item = &self->items[j];
        memset(block, 0, sizeof(block));
        block[0] = (unsigned char) item->type;
        store_le(block + 8, item->key_start, 8);
        store_le(block + 16, item->key_len, 8);
        store_le(block + 24, item->array_start, 8);
        store_le(block + 32, item->array_len, 8);
        ret = output_write(&out, block, KAS_ITEM_DESCRIPTOR_SIZE);
    }
    for (j = 0; j < n && ret == 0; j++) {
        ret = output_write(&out, self->items[j].key, self->items[j].key_len);
    }
    position = n > 0 ? self->items[n - 1].key_start + self->items[n - 1].key_len
                     : KAS_HEADER_SIZE;
    for (j = 0; j < n && ret == 0; j++) {
        item = &self->items[j];
        ret = output_write(&out, zeros, (size_t) (item->array_start - position));
        if (ret == 0) {
            position = item->array_start + item->array_len * type_sizes[item->type];
            ret = output_write(
                &out, item->array, item->array_len * type_sizes[item->type]);
        }
    }
    if (ret == 0) {
        ret = output_flush(&out);
    }
    if (ret == 0 && fflush(self->file) != 0) {
        ret = KAS_ERR_IO;
    }
    free(out.buf);
    return ret;
}

/* ------------------------------------------------------------------------ */
/* Opening and closing                                                       */
/* ------------------------------------------------------------------------ */

/* Returns 'r', 'w' or 'a' for a valid mode string, else 0. */
static char
parse_mode(const char *mode)
{
    if (mode != NULL && mode[0] != '\0' && mode[1] == '\0'
        && (mode[0] == 'r' || mode[0] == 'w' || mode[0] == 'a')) {
        return mode[0];
    }
    return 0;
}

static void
start_writing(kastore_t *self, FILE *file, int owns_file, int flags)
{
    self->mode = KAS_WRITE;
    self->flags = flags;
    self->file = file;
    self->owns_file = owns_file;
    self->sorted = 1;
}

/* Append mode: read the whole old store, keep its block of bytes for the old
 * arrays (borrowed by the new items), and rewrite the file at close. The file
 * is only truncated once everything else has succeeded. */
static int
open_append(kastore_t *self, const char *filename, int flags)
{
    kastore_t old;
    FILE *file;
    size_t j;
    int ret;

    memset(&old, 0, sizeof(old));
    old.file = fopen(filename, "rb");
    if (old.file == NULL) {
        return KAS_ERR_IO;
    }
    old.owns_file = 1;
    old.mode = KAS_READ;
    old.flags = KAS_READ_ALL;
    ret = open_read(&old, 1);
    if (fclose(old.file) != 0 && ret == 0) {
        ret = KAS_ERR_IO;
    }
    old.file = NULL;
    if (ret == 0) {
        start_writing(self, NULL, 1, flags);
        self->read_buffer = old.read_buffer;
        old.read_buffer = NULL;
    }
    for (j = 0; j < old.num_items && ret == 0; j++) {
        ret = add_item(self, old.items[j].key, old.items[j].key_len, old.items[j].array,
            old.items[j].array_len, old.items[j].type, 0);
    }
    kastore_close(&old);
    if (ret == 0) {
        file = fopen(filename, "wb");
        if (file == NULL) {
            ret = KAS_ERR_IO;
        }
        self->file = file;
    }
    return ret;
}

int
kastore_open(kastore_t *self, const char *filename, const char *mode, int flags)
{
    char m;
    FILE *file;
    int ret;

    memset(self, 0, sizeof(*self));
    if (flags & ~KAS_OPEN_FLAGS) {
        return KAS_ERR_BAD_FLAGS;
    }
    m = parse_mode(mode);
    if (m == 0) {
        return KAS_ERR_BAD_MODE;
    }
    if (filename == NULL) {
        return KAS_ERR_IO;
    }
    if (m == 'a') {
        return open_append(self, filename, flags);
    }
    file = fopen(filename, m == 'r' ? "rb" : "wb");
    if (file == NULL) {
        return KAS_ERR_IO;
    }
    if (m == 'w') {
        start_writing(self, file, 1, flags);
        return 0;
    }
    self->mode = KAS_READ;
    self->flags = flags;
    self->file = file;
    self->owns_file = 1;
    ret = open_read(self, 1);
    if (ret == 0 && (self->flags & KAS_READ_ALL)) {
        /* Everything is in memory: the file is no longer needed. */
        self->file = NULL;
        if (fclose(file) != 0) {
            ret = KAS_ERR_IO;
        }
    }
    return ret;
}

int
kastore_openf(kastore_t *self, FILE *file, const char *mode, int flags)
{
    char m;

    memset(self, 0, sizeof(*self));
    if (flags & ~KAS_OPEN_FLAGS) {
        return KAS_ERR_BAD_FLAGS;
    }
    m = parse_mode(mode);
    if (m != 'r' && m != 'w') {
        return KAS_ERR_BAD_MODE;
    }
    if (file == NULL) {
        return KAS_ERR_IO;
    }
    if (m == 'w') {
        start_writing(self, file, 0, flags);
        return 0;
    }
    self->mode = KAS_READ;
    self->flags = flags;
    self->file = file;
    return open_read(self, 0);
}

int
kastore_close(kastore_t *self)
{
    int ret = 0;
    size_t j;

    if (self->mode == KAS_WRITE && self->file != NULL) {
        ret = write_store(self);
    }
    if (self->owns_file && self->file != NULL && fclose(self->file) != 0 && ret == 0) {
        ret = KAS_ERR_IO;
    }
    if (self->items != NULL) {
        for (j = 0; j < self->num_items; j++) {
            if (self->items[j].owns_array) {
                free(self->items[j].array);
            }
        }
    }
    free(self->items);
    free(self->read_buffer);
    free(self->key_arena);
    free(self->index);
    memset(self, 0, sizeof(*self));
    return ret;
}

/* ------------------------------------------------------------------------ */
/* Queries                                                                   */
/* ------------------------------------------------------------------------ */

int
kastore_contains(kastore_t *self, const char *key, size_t key_len)
{
    if (self->mode != KAS_READ) {
        return KAS_ERR_ILLEGAL_OPERATION;
    }
    return find_item(self, key, key_len) != NULL;
}

int
kastore_containss(kastore_t *self, const char *key)
{
    return kastore_contains(self, key, strlen(key));
}

int
kastore_get(kastore_t *self, const char *key, size_t key_len, void **array,
    size_t *array_len, int *type)
{
    return get_item(self, key, key_len, -1, array, array_len, type);
}

int
kastore_gets(
    kastore_t *self, const char *key, void **array, size_t *array_len, int *type)
{
    return get_item(self, key, strlen(key), -1, array, array_len, type);
}

/* The typed get, put and own-put functions of one type. */
#define KAS_TYPED_FUNCTIONS(name, ctype, code)                                          \
    int kastore_gets_##name(                                                           \
        kastore_t *self, const char *key, ctype **array, size_t *array_len)            \
    {                                                                                  \
        void *data = NULL;                                                             \
        int ret = get_item(self, key, strlen(key), code, &data, array_len, NULL);      \
        if (ret == 0) {                                                                \
            *array = (ctype *) data;                                                   \
        }                                                                              \
        return ret;                                                                    \
    }                                                                                  \
    int kastore_puts_##name(kastore_t *self, const char *key, const ctype *array,      \
        size_t array_len, int flags)                                                   \
    {                                                                                  \
        return kastore_put(self, key, strlen(key), array, array_len, code, flags);     \
    }                                                                                  \
    int kastore_oputs_##name(                                                          \
        kastore_t *self, const char *key, ctype *array, size_t array_len, int flags)   \
    {                                                                                  \
        return kastore_oput(self, key, strlen(key), array, array_len, code, flags);    \
    }

KAS_TYPED_FUNCTIONS(int8, int8_t, KAS_INT8)
KAS_TYPED_FUNCTIONS(uint8, uint8_t, KAS_UINT8)
KAS_TYPED_FUNCTIONS(int16, int16_t, KAS_INT16)
KAS_TYPED_FUNCTIONS(uint16, uint16_t, KAS_UINT16)
KAS_TYPED_FUNCTIONS(int32, int32_t, KAS_INT32)
KAS_TYPED_FUNCTIONS(uint32, uint32_t, KAS_UINT32)
KAS_TYPED_FUNCTIONS(int64, int64_t, KAS_INT64)
KAS_TYPED_FUNCTIONS(uint64, uint64_t, KAS_UINT64)
KAS_TYPED_FUNCTIONS(float32, float, KAS_FLOAT32)
KAS_TYPED_FUNCTIONS(float64, double, KAS_FLOAT64)

/* ------------------------------------------------------------------------ */
/* Miscellaneous                                                             */
/* ------------------------------------------------------------------------ */

void
kastore_print_state(kastore_t *self, FILE *out)
{
    const kaitem_t *item;
    size_t j;
    int shown;

    fprintf(out, "kastore_t at %p\n", (void *) self);
    fprintf(out, "  mode = %d, flags = %d, file_version = %d.%d\n", self->mode,
        self->flags, self->file_version[0], self->file_version[1]);
    fprintf(out, "  num_items = %llu, file_size = %llu, file_offset = %ld\n",
        (unsigned long long) self->num_items, (unsigned long long) self->file_size,
        self->file_offset);
    for (j = 0; j < self->num_items; j++) {
        item = &self->items[j];
        shown = item->key_len > 60 ? 60 : (int) item->key_len;
        fprintf(out,
            "  [%llu] type=%d key_len=%llu array_len=%llu key_start=%llu "
            "array_start=%llu array=%p key='%.*s'%s\n",
            (unsigned long long) j, item->type, (unsigned long long) item->key_len,
            (unsigned long long) item->array_len, (unsigned long long) item->key_start,
            (unsigned long long) item->array_start, item->array, shown, item->key,
            (size_t) shown < item->key_len ? "..." : "");
    }
}

const char *
kas_strerror(int err)
{
    switch (err) {
        case 0:
            return "No error";
        case KAS_ERR_GENERIC:
            return "Generic error; please report this as a bug";
        case KAS_ERR_IO:
            /* errno tells which I/O error it was, if the C library set it. */
            return errno != 0 ? strerror(errno) : "I/O error";
        case KAS_ERR_BAD_MODE:
            return "Bad open mode: use \"r\", \"w\" or (kastore_open only) \"a\"";
        case KAS_ERR_NO_MEMORY:
            return "Out of memory";
        case KAS_ERR_BAD_FILE_FORMAT:
            return "File is not a valid kastore file (bad header, bad layout "
                   "or truncated)";
        case KAS_ERR_VERSION_TOO_OLD:
            return "File format version is too old for this library";
        case KAS_ERR_VERSION_TOO_NEW:
            return "File format version is too new for this library; upgrade it";
        case KAS_ERR_BAD_TYPE:
            return "Unknown array type code";
        case KAS_ERR_EMPTY_KEY:
            return "Keys must be at least one byte long";
        case KAS_ERR_DUPLICATE_KEY:
            return "Key is already in the store";
        case KAS_ERR_KEY_NOT_FOUND:
            return "Key not found";
        case KAS_ERR_ILLEGAL_OPERATION:
            return "Operation not allowed in this mode (get in write mode, or put "
                   "in read mode)";
        case KAS_ERR_TYPE_MISMATCH:
            return "The array has another type than the one asked for";
        case KAS_ERR_EOF:
            return "End of file: no store to read";
        case KAS_ERR_BAD_FLAGS:
            return "Unknown flags";
        default:
            return "Unknown error code";
    }
}

kas_version_t
kas_version(void)
{
    kas_version_t version;

    version.major = KAS_VERSION_MAJOR;
    version.minor = KAS_VERSION_MINOR;
    version.patch = KAS_VERSION_PATCH;
    return version;
}
