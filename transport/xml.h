/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The one place that turns untrusted bytes into a libxml2 tree, for the
 * message codec and for the scheduler's policy parser.
 *
 * It refuses: bytes that are not UTF-8, any DOCTYPE (so no entity is ever
 * declared, let alone expanded), and anything not well-formed. It parses
 * with XML_PARSE_NONET | XML_PARSE_NO_XXE-equivalent settings: no network,
 * no DTD loading, no entity substitution, libxml2's default size limits.
 */

#include <stddef.h>
#include <stdint.h>

#include <libxml/tree.h>

#include "transport/diag.h"

/* Parses len bytes. On success *ret is a document owned by the caller
 * (xmlFreeDoc) whose root element is named expected_root (no namespace).
 * Returns -EBADMSG with diag: NOT_UTF8, DOCTYPE, NOT_WELL_FORMED or
 * WRONG_ROOT. */
int tether_xml_read(const uint8_t *data, size_t len, const char *expected_root, xmlDoc **ret,
                    struct tether_diag *diag);

/*
 * Finds the single child element named name of parent. Returns 1 and sets
 * *ret when there is exactly one, 0 when there is none, and -EBADMSG with
 * DUPLICATE_ELEMENT when there are several.
 */
int tether_xml_child(xmlNode *parent, const char *name, xmlNode **ret, struct tether_diag *diag);

/* Text content of an element, owned by the caller ("" for an empty one).
 * Only the element's own text and CDATA children count; release with
 * free(). */
int tether_xml_text(xmlNode *node, char **ret);
