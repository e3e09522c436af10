/* SPDX-License-Identifier: Apache-2.0 */
#include "agent/config.h"
#include "agent/mp-addresses.h"

#include <dirent.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/strutil.h"
#include "transport/sign.h"

#define USEC_PER_SEC 1000000ULL

typedef int (*config_parser_fn)(const char *value, void *dst, uint64_t min, uint64_t max,
                                const char **reason);

struct config_key {
        const char *section;
        const char *key;
        config_parser_fn parse;
        size_t offset;
        uint64_t min, max;
};

static int parse_string(const char *value, void *dst, uint64_t min, uint64_t max, const char **reason) {
        char **s = dst, *n;

        if (max > 0 && strlen(value) > max) {
                *reason = "value too long";
                return -EINVAL;
        }
        if (min > 0 && strlen(value) < min) {
                *reason = "value must not be empty";
                return -EINVAL;
        }
        n = strdup(value);
        if (!n)
                return -ENOMEM;
        free(*s);
        *s = value[0] ? n : (free(n), NULL);
        return 0;
}

static int parse_path(const char *value, void *dst, uint64_t min, uint64_t max, const char **reason) {
        if (value[0] && value[0] != '/') {
                *reason = "not an absolute path";
                return -EINVAL;
        }
        return parse_string(value, dst, min, PATH_MAX - 1, reason);
}

static int parse_number(const char *value, uint64_t min, uint64_t max, uint64_t *ret, const char **reason) {
        int r = parse_u64(value, min, max, ret);
        if (r == -ERANGE)
                *reason = "number out of range";
        else if (r < 0)
                *reason = "not a number";
        return r;
}

static int parse_u16(const char *value, void *dst, uint64_t min, uint64_t max, const char **reason) {
        uint64_t v;
        int r = parse_number(value, min, max, &v, reason);
        if (r < 0)
                return r;
        *(uint16_t *)dst = (uint16_t)v;
        return 0;
}

static int parse_u32(const char *value, void *dst, uint64_t min, uint64_t max, const char **reason) {
        uint64_t v;
        int r = parse_number(value, min, max, &v, reason);
        if (r < 0)
                return r;
        *(uint32_t *)dst = (uint32_t)v;
        return 0;
}

static int parse_bytes(const char *value, void *dst, uint64_t min, uint64_t max, const char **reason) {
        return parse_number(value, min, max, (uint64_t *)dst, reason);
}

static int parse_bool(const char *value, void *dst, uint64_t min, uint64_t max, const char **reason) {
        static const char *const yes[] = {"yes", "true", "on", "1"}, *const no[] = {"no", "false", "off",
                                                                                    "0"};

        for (size_t i = 0; i < ELEMENTSOF(yes); i++) {
                if (strcasecmp(value, yes[i]) == 0) {
                        *(bool *)dst = true;
                        return 0;
                }
                if (strcasecmp(value, no[i]) == 0) {
                        *(bool *)dst = false;
                        return 0;
                }
        }
        *reason = "not a boolean (yes or no)";
        return -EINVAL;
}

/* Seconds, with an optional unit: "90", "90s", "15min", "2h", "7d". */
static int parse_seconds(const char *value, void *dst, uint64_t min, uint64_t max, const char **reason) {
        static const struct {
                const char *suffix;
                uint64_t mult;
        } units[] = {{"s", 1}, {"min", 60}, {"m", 60}, {"h", 3600}, {"d", 86400}};
        size_t n = strlen(value), digits = 0;
        uint64_t v, mult = 1;
        int r;

        while (digits < n && value[digits] >= '0' && value[digits] <= '9')
                digits++;
        if (digits < n) {
                size_t i;
                for (i = 0; i < ELEMENTSOF(units); i++)
                        if (strcmp(value + digits, units[i].suffix) == 0)
                                break;
                if (i == ELEMENTSOF(units)) {
                        *reason = "not a duration (seconds, or a number with s, min, h or d)";
                        return -EINVAL;
                }
                mult = units[i].mult;
        }
        r = parse_u64_n(value, digits, 0, UINT32_MAX, &v);
        if (r < 0) {
                *reason = "not a duration (seconds, or a number with s, min, h or d)";
                return r;
        }
        v *= mult;
        if (v < min || v > max) {
                *reason = "duration out of range";
                return -ERANGE;
        }
        *(uint64_t *)dst = v * USEC_PER_SEC;
        return 0;
}

/* Ports separated by spaces or commas, at most TETHER_CHANNEL_MAX_ALT_PORTS;
 * empty for none. */
static int parse_port_list(const char *value, void *dst, uint64_t min, uint64_t max, const char **reason) {
        struct tether_port_list list = {0};

        for (const char *p = value + strspn(value, " ,"); *p; p += strspn(p, " ,")) {
                size_t len = strcspn(p, " ,");
                uint64_t v;

                if (list.n >= TETHER_CHANNEL_MAX_ALT_PORTS) {
                        *reason = "too many ports (at most 4)";
                        return -EINVAL;
                }
                if (parse_u64_n(p, len, 1, 65535, &v) < 0) {
                        *reason = "not a list of port numbers (1..65535)";
                        return -EINVAL;
                }
                list.port[list.n++] = (uint16_t)v;
                p += len;
        }
        *(struct tether_port_list *)dst = list;
        return 0;
}

static int parse_transport(const char *value, void *dst, uint64_t min, uint64_t max, const char **reason) {
        enum tether_channel_mode *m = dst;

        if (strcmp(value, "auto") == 0)
                *m = TETHER_CHANNEL_AUTO;
        else if (strcmp(value, "tcp") == 0)
                *m = TETHER_CHANNEL_TCP;
        else if (strcmp(value, "https") == 0)
                *m = TETHER_CHANNEL_HTTPS;
        else {
                *reason = "not one of auto, tcp, https";
                return -EINVAL;
        }
        return 0;
}

/* One SHA-256 fingerprint of len bytes at value: 64 hex digits, colons
 * allowed between bytes, into out lowercase without colons. */
static int normalize_fingerprint(const char *value, size_t len, char out[65]) {
        size_t n = 0;

        for (size_t i = 0; i < len; i++) {
                char ch = value[i];
                if (ch == ':')
                        continue;
                if (ch >= 'A' && ch <= 'F')
                        ch = (char)(ch - 'A' + 'a');
                if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f')) || n >= 64)
                        return -EINVAL;
                out[n++] = ch;
        }
        if (n != 64)
                return -EINVAL;
        out[n] = 0;
        return 0;
}

/* SHA-256 hex, 64 digits, colons allowed between bytes; stored lowercase. */
static int parse_fingerprint(const char *value, void *dst, uint64_t min, uint64_t max, const char **reason) {
        char buf[65], **s = dst;

        if (!value[0]) {
                free(*s);
                *s = NULL;
                return 0;
        }
        if (normalize_fingerprint(value, strlen(value), buf) < 0) {
                *reason = "not a SHA-256 fingerprint (64 hex digits)";
                return -EINVAL;
        }
        return parse_string(buf, dst, 0, 0, reason);
}

/* "fp1, fp2": one per MP node that presents its own key (PROTOCOL-v1 7.4);
 * stored lowercase, joined by ','. */
static int parse_fingerprint_list(const char *value, void *dst, uint64_t min, uint64_t max,
                                  const char **reason) {
        _cleanup_(freep) char *out = NULL;
        size_t n = 0, count = 0;

        if (!value[0])
                return parse_fingerprint(value, dst, min, max, reason);
        out = malloc(strlen(value) + 1);
        if (!out)
                return -ENOMEM;
        for (const char *p = value;; count++) {
                size_t len = strcspn(p, ",");
                const char *b = p, *e = p + len;

                while (b < e && (*b == ' ' || *b == '\t'))
                        b++;
                while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
                        e--;
                if (count == 16 || normalize_fingerprint(b, (size_t)(e - b), out + n) < 0) {
                        *reason = count == 16 ? "more than 16 fingerprints"
                                              : "not a list of SHA-256 fingerprints (64 hex digits each, "
                                                "separated by commas)";
                        return -EINVAL;
                }
                n += 64;
                if (!p[len])
                        break;
                out[n++] = ',';
                p += len + 1;
        }
        out[n] = 0;
        return parse_string(out, dst, 0, 0, reason);
}

/* "a, b:10200, [2001:db8::1]" (agent/mp-addresses.h); kept as written,
 * the channel parses it again. */
static int parse_host_list(const char *value, void *dst, uint64_t min, uint64_t max, const char **reason) {
        struct mp_addresses a = {0};
        int r;

        if (!value[0]) /* unset: validate() says it is required */
                return parse_string(value, dst, 0, max, reason);
        if (strlen(value) > max) {
                *reason = "value too long";
                return -EINVAL;
        }
        r = mp_addresses_parse(value, &a, reason);
        if (r < 0)
                return r;
        mp_addresses_done(&a);
        return parse_string(value, dst, min, max, reason);
}

static int parse_log_level(const char *value, void *dst, uint64_t min, uint64_t max, const char **reason) {
        static const struct {
                const char *name;
                int level;
        } levels[] = {{"debug", LOG_DEBUG},
                      {"info", LOG_INFO},
                      {"notice", LOG_NOTICE},
                      {"warning", LOG_WARNING},
                      {"error", LOG_ERR}};

        for (size_t i = 0; i < ELEMENTSOF(levels); i++)
                if (strcmp(value, levels[i].name) == 0) {
                        *(int *)dst = levels[i].level;
                        return 0;
                }
        *reason = "not one of debug, info, notice, warning, error";
        return -EINVAL;
}

#define OFF(f) offsetof(struct tether_config, f)
#define DAY (86400ULL)
static const struct config_key config_keys[] = {
        {"mp", "host", parse_host_list, OFF(mp_host), 0, 4096},
        {"mp", "tcp_port", parse_u16, OFF(tcp_port), 1, 65535},
        {"mp", "https_port", parse_u16, OFF(https_port), 1, 65535},
        {"mp", "transport", parse_transport, OFF(transport), 0, 0},
        {"mp", "ca_file", parse_path, OFF(ca_file), 0, 0},
        {"mp", "server_fingerprint", parse_fingerprint_list, OFF(server_fingerprint), 0, 0},
        {"mp", "proxy", parse_string, OFF(proxy), 0, 1024},
        {"mp", "https_hold_seconds", parse_u32, OFF(https_hold_seconds), 0, 300},
        {"mp", "https_alt_ports", parse_port_list, OFF(https_alt_ports), 0, 0},
        {"mp", "tcp_retry_interval", parse_seconds, OFF(tcp_retry_usec), 1, DAY},
        {"trust", "site_key", parse_path, OFF(site_key), 0, 0},
        {"trust", "site_key_fingerprint", parse_fingerprint, OFF(site_key_fingerprint), 0, 0},
        {"trust", "trust_on_first_use", parse_bool, OFF(trust_on_first_use), 0, 0},
        {"agent", "state_dir", parse_path, OFF(state_dir), 1, 0},
        {"agent", "runtime_dir", parse_path, OFF(runtime_dir), 1, 0},
        {"agent", "user", parse_string, OFF(user), 1, 64},
        {"agent", "max_frame", parse_u32, OFF(max_frame), 4096, 16u * 1024u * 1024u},
        {"agent", "keepalive_seconds", parse_u32, OFF(keepalive_seconds), 0, 86400},
        {"agent", "enrolment_token", parse_string, OFF(enrolment_token), 0, 512},
        {"agent", "start_delay_max_seconds", parse_u32, OFF(start_delay_max_seconds), 0, 86400},
        {"agent", "boot_start_delay_max_seconds", parse_u32, OFF(boot_start_delay_max_seconds), 0, 86400},
        {"agent", "machine_id_file", parse_path, OFF(machine_id_file), 1, 0},
        {"agent", "respawn_delay_max_seconds", parse_u32, OFF(respawn_delay_max_seconds), 1, 3600},
        {"agent", "key_rotation_days", parse_u32, OFF(key_rotation_days), 0, 3650},
        {"cycles", "cycles_dir", parse_path, OFF(cycles_dir), 1, 0},
        {"cycles", "kill_grace", parse_seconds, OFF(kill_grace_usec), 1, 3600},
        {"cycles", "output_cap", parse_bytes, OFF(output_cap), 1024, 64u * 1024u * 1024u},
        {"log", "level", parse_log_level, OFF(log_level), 0, 0},
        {"log", "cmtrace_file", parse_path, OFF(cmtrace_file), 0, 0},
};

static int config_add_error(struct tether_config *c, const char *file, unsigned line, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

static int config_add_error(struct tether_config *c, const char *file, unsigned line, const char *fmt, ...) {
        _cleanup_(freep) char *msg = NULL;
        char *full = NULL, **n;
        va_list ap;
        int k;

        va_start(ap, fmt);
        k = vasprintf(&msg, fmt, ap);
        va_end(ap);
        if (k < 0)
                return -ENOMEM;
        if (line > 0)
                k = asprintf(&full, "%s:%u: %s", file, line, msg);
        else
                k = asprintf(&full, "%s: %s", file, msg);
        if (k < 0)
                return -ENOMEM;
        n = realloc(c->errors, (c->n_errors + 1) * sizeof(char *));
        if (!n) {
                free(full);
                return -ENOMEM;
        }
        c->errors = n;
        c->errors[c->n_errors++] = full;
        return 0;
}

/* The keys of each task type, [cycles] <stem>_<suffix> (common/tasktype.h),
 * at offset + type * stride. */
static const struct cycle_key {
        const char *suffix;
        config_parser_fn parse;
        size_t offset, stride;
        uint64_t min, max;
} cycle_keys[] = {
        {"timeout", parse_seconds, OFF(timeout_usec), sizeof(uint64_t), 1, DAY},
        {"interval", parse_seconds, OFF(interval_usec), sizeof(uint64_t), 0, 30 * DAY},
        {"enabled", parse_bool, OFF(enabled), sizeof(bool), 0, 0},
};

/* The names of the keys of cycle_keys, "machine_policy_timeout", made once. */
static char cycle_key_names[TETHER_TASK_TYPE_MAX][ELEMENTSOF(cycle_keys)][64];

static const char *cycle_key_name(uint32_t type, size_t k) {
        char *name = cycle_key_names[type - 1][k];

        if (!name[0])
                snprintf(name, sizeof(cycle_key_names[0][0]), "%s_%s",
                         tether_task_type_info(type)->config_stem, cycle_keys[k].suffix);
        return name;
}

/* The key named section/key as a struct config_key, from either table. */
static bool find_key(const char *section, const char *key, struct config_key *ret) {
        for (size_t i = 0; i < ELEMENTSOF(config_keys); i++)
                if (strcmp(config_keys[i].section, section) == 0 && strcmp(config_keys[i].key, key) == 0) {
                        *ret = config_keys[i];
                        return true;
                }
        if (strcmp(section, "cycles") != 0)
                return false;
        for (uint32_t t = 1; t <= TETHER_TASK_TYPE_MAX; t++)
                for (size_t k = 0; k < ELEMENTSOF(cycle_keys); k++)
                        if (strcmp(cycle_key_name(t, k), key) == 0) {
                                const struct cycle_key *ck = &cycle_keys[k];
                                *ret = (struct config_key){"cycles",  cycle_key_name(t, k),
                                                           ck->parse, ck->offset + t * ck->stride,
                                                           ck->min,   ck->max};
                                return true;
                        }
        return false;
}

int tether_config_set(struct tether_config *c, const char *file, unsigned line, const char *section,
                      const char *key, const char *value) {
        const char *reason = NULL;
        struct config_key found;
        int r;

        if (find_key(section, key, &found)) {
                const struct config_key *k = &found;
                r = k->parse(value, (uint8_t *)c + k->offset, k->min, k->max, &reason);
                if (r == -ENOMEM)
                        return r;
                if (r < 0) {
                        if (config_add_error(c, file, line, "[%s] %s: %s: '%s'", section, key,
                                             reason ? reason : "bad value", value) < 0)
                                return -ENOMEM;
                        return -EINVAL;
                }
                return 0;
        }
        if (config_add_error(c, file, line, "[%s] %s: unknown key", section, key) < 0)
                return -ENOMEM;
        return -EINVAL;
}

struct parse_ctx {
        struct tether_config *config;
        const char *file;
        FILE *f;
        unsigned line;
        unsigned long_line; /* a line inih would have cut, or 0 */
        bool oom;
};

/* fgets-style reader that counts lines, so that the handler knows where it
 * is (inih's own line numbers reach only its return value). */
static char *config_reader(char *str, int num, void *stream) {
        struct parse_ctx *ctx = stream;
        char *p = fgets(str, num, ctx->f);
        size_t n;

        if (!p)
                return NULL;
        ctx->line++;
        n = strlen(p);
        if (n > 0 && p[n - 1] != '\n' && !feof(ctx->f)) {
                int ch;
                /* Over-long line: skip the rest and report it. */
                ctx->long_line = ctx->line;
                while ((ch = fgetc(ctx->f)) != EOF && ch != '\n')
                        ;
                p[0] = '\n';
                p[1] = 0;
        }
        return p;
}

static int config_handler(void *user, const char *section, const char *name, const char *value) {
        struct parse_ctx *ctx = user;

        if (tether_config_set(ctx->config, ctx->file, ctx->line, section[0] ? section : "(none)", name,
                              value) == -ENOMEM)
                ctx->oom = true;
        return 1; /* our own errors are recorded; only syntax errors reach inih's count */
}

static int config_parse_file(struct tether_config *c, const char *path, bool required) {
        _cleanup_(fclosep) FILE *f = NULL;
        struct parse_ctx ctx = {.config = c, .file = path};
        char **n;
        int r;

        f = fopen(path, "re");
        if (!f) {
                if (errno == ENOENT && !required)
                        return 0;
                return config_add_error(c, path, 0, "cannot read: %s", strerror(errno));
        }
        n = realloc(c->files, (c->n_files + 1) * sizeof(char *));
        if (!n)
                return -ENOMEM;
        c->files = n;
        c->files[c->n_files] = strdup(path);
        if (!c->files[c->n_files])
                return -ENOMEM;
        c->n_files++;

        ctx.f = f;
        r = ini_parse_stream(config_reader, &ctx, config_handler, &ctx);
        if (ctx.oom || r == -2)
                return -ENOMEM;
        if (ctx.long_line > 0 &&
            config_add_error(c, path, ctx.long_line, "line too long (at most 196 bytes)") < 0)
                return -ENOMEM;
        if (r > 0 && (unsigned)r != ctx.long_line &&
            config_add_error(c, path, (unsigned)r, "syntax error (expected [section] or key = value)") < 0)
                return -ENOMEM;
        return 0;
}

static int cmp_str(const void *a, const void *b) {
        return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int config_parse_dropins(struct tether_config *c, const char *dir) {
        DIR *d = opendir(dir);
        char **names = NULL;
        size_t n = 0;
        struct dirent *de;
        int r = 0;

        if (!d)
                return errno == ENOENT ? 0 : config_add_error(c, dir, 0, "cannot read: %s", strerror(errno));
        while ((de = readdir(d))) {
                size_t l = strlen(de->d_name);
                char **nn;
                if (de->d_name[0] == '.' || l < 6 || strcmp(de->d_name + l - 5, ".conf") != 0)
                        continue;
                nn = realloc(names, (n + 1) * sizeof(char *));
                if (!nn) {
                        r = -ENOMEM;
                        goto done;
                }
                names = nn;
                names[n] = strdup(de->d_name);
                if (!names[n]) {
                        r = -ENOMEM;
                        goto done;
                }
                n++;
        }
        qsort(names, n, sizeof(char *), cmp_str);
        for (size_t i = 0; i < n && r >= 0; i++) {
                _cleanup_(freep) char *p = NULL;
                if (asprintf(&p, "%s/%s", dir, names[i]) < 0) {
                        r = -ENOMEM;
                        break;
                }
                r = config_parse_file(c, p, true);
        }
done:
        for (size_t i = 0; i < n; i++)
                free(names[i]);
        free(names);
        closedir(d);
        return r;
}

int tether_config_new_default(struct tether_config **ret) {
        struct tether_config *c = calloc(1, sizeof(*c));

        if (!c)
                return -ENOMEM;
        c->tcp_port = 10123;
        c->https_port = 10124;
        c->transport = TETHER_CHANNEL_AUTO;
        c->https_hold_seconds = 50;
        c->https_alt_ports = (struct tether_port_list){.port = {443}, .n = 1};
        c->tcp_retry_usec = 60 * USEC_PER_SEC;
        c->max_frame = 1024u * 1024u;
        c->keepalive_seconds = 0;
        c->start_delay_max_seconds = 0;
        c->boot_start_delay_max_seconds = 120;
        c->respawn_delay_max_seconds = 30;
        c->log_level = LOG_INFO;
        c->kill_grace_usec = 5 * USEC_PER_SEC;
        c->output_cap = 64 * 1024;
        for (uint32_t t = 1; t <= TETHER_TASK_TYPE_MAX; t++) {
                const struct tether_task_type_info *info = tether_task_type_info(t);
                c->enabled[t] = true;
                c->timeout_usec[t] = info->time_limit_sec * USEC_PER_SEC;
                c->interval_usec[t] = info->interval_sec * USEC_PER_SEC;
        }
        c->state_dir = strdup(TETHER_STATEDIR_STR);
        c->runtime_dir = strdup(TETHER_RUNDIR_STR);
        c->user = strdup("tether");
        c->machine_id_file = strdup("/etc/machine-id");
        c->cycles_dir = strdup(TETHER_SYSCONFDIR_STR "/cycles.d");
        if (!c->state_dir || !c->runtime_dir || !c->user || !c->machine_id_file || !c->cycles_dir) {
                tether_config_free(c);
                return -ENOMEM;
        }
        *ret = c;
        return 0;
}

void tether_config_validate(struct tether_config *c, const char *main_path) {
        if (!c->mp_host)
                (void)config_add_error(c, main_path, 0, "[mp] host: required, and not set");
        if (!c->site_key && !c->site_key_fingerprint && !c->trust_on_first_use)
                (void)config_add_error(c, main_path, 0,
                                       "[trust]: no site key: set site_key, site_key_fingerprint, "
                                       "or trust_on_first_use = yes");
        if (c->site_key && c->trust_on_first_use)
                (void)config_add_error(c, main_path, 0,
                                       "[trust] trust_on_first_use: cannot be combined with site_key");
}

int tether_config_load(const char *main_path, struct tether_config **ret) {
        struct tether_config *c = NULL;
        _cleanup_(freep) char *dropins = NULL;
        int r;

        r = tether_config_new_default(&c);
        if (r < 0)
                return r;
        r = config_parse_file(c, main_path, true);
        if (r >= 0) {
                if (asprintf(&dropins, "%s.d", main_path) < 0)
                        r = -ENOMEM;
                else
                        r = config_parse_dropins(c, dropins);
        }
        if (r < 0) {
                tether_config_free(c);
                return r;
        }
        tether_config_validate(c, main_path);
        *ret = c;
        return 0;
}

struct tether_config *tether_config_free(struct tether_config *c) {
        if (!c)
                return NULL;
        free(c->mp_host);
        free(c->ca_file);
        free(c->server_fingerprint);
        free(c->proxy);
        free(c->site_key);
        free(c->site_key_fingerprint);
        free(c->state_dir);
        free(c->runtime_dir);
        free(c->user);
        free(c->enrolment_token);
        free(c->machine_id_file);
        free(c->cycles_dir);
        free(c->cmtrace_file);
        for (size_t i = 0; i < c->n_errors; i++)
                free(c->errors[i]);
        free(c->errors);
        for (size_t i = 0; i < c->n_files; i++)
                free(c->files[i]);
        free(c->files);
        free(c);
        return NULL;
}

bool tether_config_key_at(size_t i, const char **ret_section, const char **ret_key) {
        if (i < ELEMENTSOF(config_keys)) {
                *ret_section = config_keys[i].section;
                *ret_key = config_keys[i].key;
                return true;
        }
        i -= ELEMENTSOF(config_keys);
        if (i >= TETHER_TASK_TYPE_MAX * ELEMENTSOF(cycle_keys))
                return false;
        *ret_section = "cycles";
        *ret_key = cycle_key_name((uint32_t)(i / ELEMENTSOF(cycle_keys)) + 1, i % ELEMENTSOF(cycle_keys));
        return true;
}

const char *tether_config_transport_name(enum tether_channel_mode m) {
        switch (m) {
        case TETHER_CHANNEL_AUTO:
                return "auto";
        case TETHER_CHANNEL_TCP:
                return "tcp";
        case TETHER_CHANNEL_HTTPS:
                return "https";
        }
        return "unknown";
}

uint32_t tether_config_start_delay(const struct tether_config *c, uint64_t uptime_seconds) {
        uint32_t delay = c->start_delay_max_seconds;

        if (uptime_seconds < TETHER_BOOT_WINDOW_SECONDS && c->boot_start_delay_max_seconds > delay)
                delay = c->boot_start_delay_max_seconds;
        return delay;
}

static void report_line(tether_config_report_fn report, void *userdata, const char *who, const char *fmt,
                        ...) __attribute__((format(printf, 4, 5)));
static void report_line(tether_config_report_fn report, void *userdata, const char *who, const char *fmt,
                        ...) {
        char text[1024], line[1200];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(text, sizeof(text), fmt, ap);
        va_end(ap);
        if (who)
                snprintf(line, sizeof(line), "%s (as %s)", text, who);
        else
                snprintf(line, sizeof(line), "%s", text);
        report(userdata, line);
}

unsigned tether_config_check_files(const struct tether_config *c, const char *config_path, const char *who,
                                   tether_config_report_fn report, void *userdata) {
        unsigned bad = 0;
        int r;

        if (c->site_key) {
                struct tether_key *key = NULL;
                r = tether_key_load_public(c->site_key, &key);
                tether_key_free(key);
                if (r < 0) {
                        report_line(report, userdata, who, "%s: [trust] site_key: cannot load '%s': %s",
                                    config_path, c->site_key, strerror(-r));
                        bad++;
                }
        }
        if (c->ca_file && access(c->ca_file, R_OK) < 0) {
                report_line(report, userdata, who, "%s: [mp] ca_file: cannot read '%s': %s", config_path,
                            c->ca_file, strerror(errno));
                bad++;
        }
        if (c->machine_id_file && access(c->machine_id_file, R_OK) < 0 && errno != ENOENT) {
                report_line(report, userdata, who, "%s: [agent] machine_id_file: cannot read '%s': %s",
                            config_path, c->machine_id_file, strerror(errno));
                bad++;
        }
        return bad;
}
