/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

#include "transport/diag.h"

int tether_diag_set(struct tether_diag *diag, enum tether_diag_kind kind, const char *fmt, ...) {
        va_list ap;

        if (!diag)
                return -EBADMSG;

        diag->kind = kind;
        va_start(ap, fmt);
        /* A cut message is still useful; the kind carries the precise reason. */
        (void)vsnprintf(diag->text, sizeof(diag->text), fmt, ap);
        va_end(ap);
        return -EBADMSG;
}

const char *tether_diag_kind_name(enum tether_diag_kind kind) {
        switch (kind) {
        case TETHER_DIAG_NONE:
                return "none";
        case TETHER_DIAG_BAD_MAGIC:
                return "bad-magic";
        case TETHER_DIAG_BAD_VERSION:
                return "bad-version";
        case TETHER_DIAG_BAD_TYPE:
                return "bad-type";
        case TETHER_DIAG_BODY_TOO_LARGE:
                return "body-too-large";
        case TETHER_DIAG_SIG_TOO_LARGE:
                return "signature-too-large";
        case TETHER_DIAG_TRUNCATED:
                return "truncated";
        case TETHER_DIAG_MISSING_SIGNATURE:
                return "missing-signature";
        case TETHER_DIAG_BAD_SIGNATURE:
                return "bad-signature";
        case TETHER_DIAG_NOT_UTF8:
                return "not-utf8";
        case TETHER_DIAG_DOCTYPE:
                return "doctype";
        case TETHER_DIAG_NOT_WELL_FORMED:
                return "not-well-formed";
        case TETHER_DIAG_WRONG_ROOT:
                return "wrong-root";
        case TETHER_DIAG_MISSING_ELEMENT:
                return "missing-element";
        case TETHER_DIAG_DUPLICATE_ELEMENT:
                return "duplicate-element";
        case TETHER_DIAG_BAD_NUMBER:
                return "bad-number";
        case TETHER_DIAG_BAD_GUID:
                return "bad-guid";
        case TETHER_DIAG_BAD_TIMESTAMP:
                return "bad-timestamp";
        case TETHER_DIAG_BAD_VALUE:
                return "bad-value";
        case TETHER_DIAG_TOO_LONG:
                return "too-long";
        }
        return "unknown";
}
