/*
 * Example: write a store with two arrays, then read it back.
 *
 *   cc -std=c99 -I kastore/include example.c kastore/include/kastore.c
 *   ./a.out example.kas
 */
#include <stdio.h>
#include <stdlib.h>

#include <kastore.h>

static int
check(int ret, const char *what)
{
    if (ret != 0) {
        fprintf(stderr, "%s: %s\n", what, kas_strerror(ret));
    }
    return ret;
}

int
main(int argc, char **argv)
{
    const char *filename = argc > 1 ? argv[1] : "example.kas";
    double heights[] = { 1.5, 2.25, 3.0 };
    uint32_t *counts;
    double *got_heights;
    uint32_t *got_counts;
    size_t j, num_heights, num_counts;
    kastore_t store;
    int ret;

    /* Write: puts copy their array; oputs takes a malloc'd one and frees it. */
    ret = kastore_open(&store, filename, "w", 0);
    if (ret == 0) {
        ret = kastore_puts_float64(&store, "heights", heights, 3, 0);
    }
    counts = malloc(4 * sizeof(*counts));
    if (ret == 0 && counts != NULL) {
        for (j = 0; j < 4; j++) {
            counts[j] = (uint32_t) (j * j);
        }
        ret = kastore_oputs_uint32(&store, "counts", counts, 4, 0);
        if (ret != 0) {
            free(counts); /* only a successful oput takes the array */
        }
    }
    if (check(ret, "writing") != 0 || check(kastore_close(&store), "closing") != 0) {
        return 1;
    }

    /* Read: arrays belong to the store and are valid until kastore_close. */
    ret = kastore_open(&store, filename, "r", KAS_READ_ALL);
    if (ret == 0) {
        ret = kastore_gets_float64(&store, "heights", &got_heights, &num_heights);
    }
    if (ret == 0) {
        ret = kastore_gets_uint32(&store, "counts", &got_counts, &num_counts);
    }
    if (check(ret, "reading") != 0) {
        kastore_close(&store);
        return 1;
    }
    printf("%lu keys\n", (unsigned long) store.num_items);
    for (j = 0; j < num_heights; j++) {
        printf("heights[%lu] = %g\n", (unsigned long) j, got_heights[j]);
    }
    for (j = 0; j < num_counts; j++) {
        printf("counts[%lu] = %lu\n", (unsigned long) j, (unsigned long) got_counts[j]);
    }
    /* Asking for the wrong type is an error, not a conversion. */
    if (kastore_gets_float64(&store, "counts", &got_heights, &num_heights)
        != KAS_ERR_TYPE_MISMATCH) {
        fprintf(stderr, "expected a type mismatch\n");
        kastore_close(&store);
        return 1;
    }
    return check(kastore_close(&store), "closing") == 0 ? 0 : 1;
}
