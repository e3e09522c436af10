/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Detail text (bounded, valid UTF-8, no control characters) and the
 * string vectors of argv/envp: the scheduler's small text helpers.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-login.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "common/strutil.h"
#include "scheduler/run.h"

/* ---- Detail text ---------------------------------------------------- */

void detail_add(struct detail *d, const char *fmt, ...) {
        va_list ap;
        int n;

        if (d->overflow)
                return;
        if (!d->buf) {
                d->buf = malloc(DETAIL_WORK_MAX + 1);
                if (!d->buf) {
                        d->overflow = true;
                        return;
                }
                d->buf[0] = '\0';
        }
        if (d->len > 0 && d->len + 2 < DETAIL_WORK_MAX) {
                memcpy(d->buf + d->len, "; ", 3);
                d->len += 2;
        }
        va_start(ap, fmt);
        n = vsnprintf(d->buf + d->len, DETAIL_WORK_MAX + 1 - d->len, fmt, ap);
        va_end(ap);
        if (n < 0 || d->len + (size_t)n > DETAIL_WORK_MAX) {
                d->len = DETAIL_WORK_MAX;
                d->overflow = true;
        } else {
                d->len += (size_t)n;
        }
        d->buf[d->len] = '\0';
}

static size_t utf8_seq_len(unsigned char c) {
        if (c < 0x80)
                return 1;
        if ((c & 0xe0) == 0xc0)
                return 2;
        if ((c & 0xf0) == 0xe0)
                return 3;
        if ((c & 0xf8) == 0xf0)
                return 4;
        return 0;
}

/* Copies src into a new string that is valid UTF-8 with no control
 * characters (XML 1.0 cannot carry them; a response must stay readable),
 * at most max bytes, ending in "..." when cut. */
char *text_clean(const char *src, size_t len, size_t max) {
        char *out = malloc(len + 4);
        size_t o = 0, i = 0;

        if (!out)
                return NULL;
        while (i < len) {
                unsigned char c = (unsigned char)src[i];
                size_t n = utf8_seq_len(c);

                if (n == 1) {
                        out[o++] = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
                        i++;
                } else if (n > 1 && i + n <= len && utf8_is_valid((const uint8_t *)src + i, n)) {
                        memcpy(out + o, src + i, n);
                        o += n;
                        i += n;
                } else {
                        out[o++] = '?';
                        i++;
                }
        }
        out[o] = '\0';
        if (o > max) {
                size_t cut = max - 3;
                /* Back up to the start of a character. */
                while (cut > 0 && ((unsigned char)out[cut] & 0xc0) == 0x80)
                        cut--;
                memcpy(out + cut, "...", 4);
        }
        return out;
}

/* The last line or so of a child's output, for Detail. */
char *output_excerpt(const struct child_result *res) {
        size_t len = res->output_len, start;

        while (len > 0 &&
               (res->output[len - 1] == '\n' || res->output[len - 1] == '\r' || res->output[len - 1] == ' '))
                len--;
        if (len == 0)
                return NULL;
        start = len > OUTPUT_EXCERPT_MAX ? len - OUTPUT_EXCERPT_MAX : 0;
        /* Start at a line boundary when one is near. */
        for (size_t i = len; i > start; i--)
                if (res->output[i - 1] == '\n') {
                        start = i;
                        break;
                }
        while (start < len && ((unsigned char)res->output[start] & 0xc0) == 0x80)
                start++;
        return text_clean(res->output + start, len - start, OUTPUT_EXCERPT_MAX);
}

/* ---- String vectors for argv/envp ---------------------------------- */

void strv_addf(struct strv *sv, const char *fmt, ...) {
        va_list ap;
        char *s = NULL, **nv;

        if (sv->oom)
                return;
        va_start(ap, fmt);
        if (vasprintf(&s, fmt, ap) < 0)
                s = NULL;
        va_end(ap);
        nv = s ? realloc(sv->v, (sv->n + 2) * sizeof(char *)) : NULL;
        if (!nv) {
                free(s);
                sv->oom = true;
                return;
        }
        sv->v = nv;
        sv->v[sv->n++] = s;
        sv->v[sv->n] = NULL;
}

void strv_clear(struct strv *sv) {
        for (size_t i = 0; i < sv->n; i++)
                free(sv->v[i]);
        free(sv->v);
        *sv = (struct strv){0};
}
