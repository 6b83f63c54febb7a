/*
 * replay.c - replays a fuzz target's committed inputs without libFuzzer, so that
 * `make check` (ordinary and sanitizer builds) runs every seed and every regression
 * input through the same entry point the fuzzer uses.
 *
 * Built once per target with -DHM_FUZZ_TARGET='"fuzz_x"' and linked with fuzz_x.c.
 * Inputs: $HM_SRCDIR/tests/fuzz/corpus/fuzz_x/ and $HM_SRCDIR/tests/fuzz/regressions/fuzz_x/
 * (every regular file), plus any paths given on the command line. One loop iteration per
 * file (its name is printed first, so a failure can be traced to it); a crash or a failed
 * FUZZ_ASSERT fails that iteration.
 */
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "hm/alloc.h"

#include "fuzz.h"

#ifndef HM_FUZZ_TARGET
#error "HM_FUZZ_TARGET must name the target"
#endif

static char **files;
static int n_files;

static void add_file(const char *path)
{
    char **f = realloc(files, (size_t)(n_files + 1) * sizeof(*files));

    if (!f || !(f[n_files] = strdup(path))) {
        perror("replay");
        exit(1);
    }
    files = f;
    n_files++;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Adds every regular file in dir (sorted); returns how many, -1 if dir is absent. */
static int add_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    struct stat st;
    char path[4096];
    int first = n_files;

    if (!d)
        return -1;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
            add_file(path);
    }
    closedir(d);
    qsort(files + first, (size_t)(n_files - first), sizeof(*files), cmp_str);
    return n_files - first;
}

static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL, *nb;
    size_t cap = 0, n = 0, r;

    if (!f)
        return NULL;
    for (;;) {
        if (n == cap) {
            cap = cap ? 2 * cap : 65536;
            nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
    }
    fclose(f);
    *len = n;
    return buf;
}

START_TEST(test_replay)
{
    size_t len = 0;
    unsigned char *buf = read_all(files[_i], &len), *copy;

    ck_assert_msg(buf != NULL, "cannot read %s", files[_i]);
    fprintf(stderr, "%s: %s (%zu bytes)\n", HM_FUZZ_TARGET, files[_i], len);
    /* an exact-size copy, as libFuzzer passes it, so ASan sees any over-read */
    copy = malloc(len ? len : 1);
    ck_assert_ptr_nonnull(copy);
    memcpy(copy, buf, len);
    free(buf);
    ck_assert_int_eq(hm_fuzz_init(), 0);
    LLVMFuzzerTestOneInput(copy, len);
    free(copy);
}
END_TEST

START_TEST(test_have_seeds)
{
    ck_assert_msg(n_files > 0, "no inputs found for %s", HM_FUZZ_TARGET);
}
END_TEST

int main(int argc, char **argv)
{
    const char *src = getenv("HM_SRCDIR");
    char dir[4096];
    Suite *s;
    TCase *tc;
    SRunner *sr;
    int i, failed;

    if (!src || !*src)
        src = HM_SRCDIR;
    if (argc > 1) {
        for (i = 1; i < argc; i++)
            if (add_dir(argv[i]) < 0)
                add_file(argv[i]);
    } else {
        snprintf(dir, sizeof(dir), "%s/tests/fuzz/corpus/%s", src, HM_FUZZ_TARGET);
        add_dir(dir);
        snprintf(dir, sizeof(dir), "%s/tests/fuzz/regressions/%s", src, HM_FUZZ_TARGET);
        add_dir(dir);
    }
    s = suite_create(HM_FUZZ_TARGET);
    tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_have_seeds);
    if (n_files > 0)
        tcase_add_loop_test(tc, test_replay, 0, n_files);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    for (i = 0; i < n_files; i++)
        free(files[i]);
    free(files);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
