/*
 * cmd.h - the subcommands of the `hybridmoe` command (tools/hybridmoe.c dispatches).
 *
 * A subcommand is `int hm_cmd_NAME(int argc, char **argv)` where argv[0] is the
 * subcommand's name; it returns the process exit status: 0 success, 1 failure,
 * 2 usage error. To add one: write tools/cmd_NAME.c, declare it here, add a row to
 * the table in tools/hybridmoe.c and the file to hybridmoe_SOURCES in tools/tools.am.
 */
#ifndef HM_TOOLS_CMD_H
#define HM_TOOLS_CMD_H

#include <stdint.h>
#include <stdio.h>

int hm_cmd_inspect(int argc, char **argv);
int hm_cmd_mkmodel(int argc, char **argv);
int hm_cmd_generate(int argc, char **argv);
int hm_cmd_perplexity(int argc, char **argv);

/* Prints the usage text of subcommand name to f (from the dispatcher's table). */
void hm_cmd_print_usage(const char *name, FILE *f);
/* Prints "hybridmoe NAME: message" and the usage to stderr; returns 2 (exit status). */
int hm_cmd_usage_error(const char *name, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Strict decimal parsing of a whole string; HM_EINVAL if not a number or out of range. */
int hm_cmd_parse_u64(const char *s, uint64_t *out);
/* Formats a count as "7.00 B" / "66.1 M" / "912 K" / "512" into buf. */
void hm_cmd_format_count(uint64_t n, char *buf, size_t len);

/* tools/common.c */
struct hm_model;
/* hm_cmd_parse_u64 that also rejects a value above max; *out untouched on failure. */
int hm_cmd_parse_u64_max(const char *s, uint64_t max, uint64_t *out);
/* Strict strtof of a whole string, finite only; HM_EINVAL otherwise, *out untouched. */
int hm_cmd_parse_float(const char *s, float *out);
/* The usage error for getopt_long's ':' (missing value) or any other unknown option
 * (argv[optind - 1] names it); returns 2. */
int hm_cmd_bad_option(const char *name, int c, char **argv);
/* Seconds on the monotonic clock. */
double hm_cmd_now(void);
/* Reads a whole file; *out owned (hm_free), NUL-terminated, *len bytes before the NUL.
 * max > 0: HM_ETOOBIG once the buffer reaches max bytes. HM_EIO (errno set) / HM_ENOMEM. */
int hm_cmd_read_file(const char *path, size_t max, char **out, size_t *len);
/* hm_model_load that also requires a tokenizer; on failure prints "PROG: why" to stderr,
 * returns < 0 and sets *out NULL. */
int hm_cmd_load_model(const char *prog, const char *path, struct hm_model **out);

#endif
