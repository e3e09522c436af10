/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Precise reasons for rejecting input, shared by the frame and message
 * codecs. Functions return a negative errno (usually -EBADMSG) and, when the
 * caller passes a struct tether_diag, say exactly why. Tests assert on kind;
 * logs print text, which names the element or field at fault.
 */

enum tether_diag_kind {
        TETHER_DIAG_NONE = 0,
        /* frame layer */
        TETHER_DIAG_BAD_MAGIC,
        TETHER_DIAG_BAD_VERSION,
        TETHER_DIAG_BAD_TYPE,
        TETHER_DIAG_BODY_TOO_LARGE,
        TETHER_DIAG_SIG_TOO_LARGE,
        TETHER_DIAG_TRUNCATED,
        TETHER_DIAG_MISSING_SIGNATURE,
        TETHER_DIAG_BAD_SIGNATURE,
        /* message layer */
        TETHER_DIAG_NOT_UTF8,
        TETHER_DIAG_DOCTYPE,
        TETHER_DIAG_NOT_WELL_FORMED,
        TETHER_DIAG_WRONG_ROOT,
        TETHER_DIAG_MISSING_ELEMENT,
        TETHER_DIAG_DUPLICATE_ELEMENT,
        TETHER_DIAG_BAD_NUMBER,
        TETHER_DIAG_BAD_GUID,
        TETHER_DIAG_BAD_TIMESTAMP,
        TETHER_DIAG_BAD_VALUE,
        TETHER_DIAG_TOO_LONG,
};

struct tether_diag {
        enum tether_diag_kind kind;
        char text[256]; /* "missing required element 'TaskGUID'" */
};

/* Fills diag (which may be NULL) and returns -EBADMSG. */
int tether_diag_set(struct tether_diag *diag, enum tether_diag_kind kind, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

const char *tether_diag_kind_name(enum tether_diag_kind kind);
