/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The one entry point for untrusted XML (see xml.h).
 *
 * Defence in depth against DTD tricks (billion laughs, XXE):
 *   1. the parser runs without NOENT, DTDLOAD, DTDATTR, DTDVALID, HUGE or
 *      XINCLUDE, and with NONET, so nothing is substituted or fetched even
 *      if a DTD got through;
 *   2. our SAX hooks for the DOCTYPE declaration, the external subset and
 *      entity declarations stop the parser the moment a DOCTYPE starts,
 *      before its internal subset is even read, so a billion-laughs
 *      document costs a few bytes of parsing;
 *   3. after parsing, a document with an internal or external subset is
 *      refused anyway;
 *   4. a document that libxml2 finds not well-formed is scanned for a
 *      DOCTYPE outside comments, CDATA and processing instructions, so that
 *      a misplaced DOCTYPE is reported as what it is.
 *
 * libxml2 errors never reach stderr: each parser context gets its own
 * structured error handler, which keeps the first message for the diag.
 * No global libxml2 state is changed, so this is safe to call from several
 * threads.
 */

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/parserInternals.h>
#include <libxml/tree.h>
#include <libxml/xmlerror.h>

#include "common/cleanup.h"
#include "common/strutil.h"
#include "transport/xml.h"

/* Never XML_PARSE_NOENT, DTDLOAD, DTDATTR, DTDVALID, HUGE or XINCLUDE.
 * IGNORE_ENC: the bytes are checked to be UTF-8 and are parsed as UTF-8,
 * whatever the XML declaration claims, so no transcoder ever runs. */
#define TETHER_XML_OPTIONS (XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING | XML_PARSE_IGNORE_ENC)

struct read_state {
        bool doctype;
        bool have_error;
        char error[160];
};

static void parser_stop_for_doctype(void *ctx) {
        xmlParserCtxtPtr ctxt = ctx; /* SAX2 userData is the context itself */
        struct read_state *st = ctxt->_private;

        st->doctype = true;
        xmlStopParser(ctxt);
}

static void on_internal_subset(void *ctx, const xmlChar *name, const xmlChar *external_id,
                               const xmlChar *system_id) {
        parser_stop_for_doctype(ctx);
}

static void on_external_subset(void *ctx, const xmlChar *name, const xmlChar *external_id,
                               const xmlChar *system_id) {
        parser_stop_for_doctype(ctx);
}

static void on_entity_decl(void *ctx, const xmlChar *name, int type, const xmlChar *public_id,
                           const xmlChar *system_id, xmlChar *content) {
        parser_stop_for_doctype(ctx);
}

static xmlParserInputPtr on_resolve_entity(void *ctx, const xmlChar *public_id, const xmlChar *system_id) {
        /* Never load anything, whatever asks. */
        parser_stop_for_doctype(ctx);
        return NULL;
}

static void on_structured_error(void *ctx, xmlErrorPtr error) {
        xmlParserCtxtPtr ctxt = ctx;
        struct read_state *st;
        size_t n;

        if (!ctxt || !error)
                return;
        st = ctxt->_private;
        if (!st || st->have_error || error->level < XML_ERR_ERROR)
                return;
        st->have_error = true;
        snprintf(st->error, sizeof(st->error), "line %d: %s", error->line,
                 error->message ? error->message : "parse error");
        /* libxml2 messages end with a newline; the diag text must not. */
        n = strlen(st->error);
        while (n > 0 && (st->error[n - 1] == '\n' || st->error[n - 1] == '\r'))
                st->error[--n] = '\0';
}

/* Skips from p (pointing at the opener) past the terminator; returns end
 * when the construct is not terminated. */
static const uint8_t *skip_past(const uint8_t *p, const uint8_t *end, const char *terminator) {
        size_t tlen = strlen(terminator);

        for (; p + tlen <= end; p++)
                if (memcmp(p, terminator, tlen) == 0)
                        return p + tlen;
        return end;
}

static bool starts(const uint8_t *p, const uint8_t *end, const char *s) {
        size_t n = strlen(s);

        return (size_t)(end - p) >= n && memcmp(p, s, n) == 0;
}

/* True when "<!DOCTYPE" appears as markup, i.e. outside comments, CDATA
 * sections and processing instructions ('<' cannot appear literally in
 * text or attribute values of a well-formed document). */
static bool has_doctype_markup(const uint8_t *data, size_t len) {
        const uint8_t *p = data, *end = data + len;

        while (p < end) {
                if (*p != '<') {
                        p++;
                        continue;
                }
                if (starts(p, end, "<!--"))
                        p = skip_past(p + 4, end, "-->");
                else if (starts(p, end, "<![CDATA["))
                        p = skip_past(p + 9, end, "]]>");
                else if (starts(p, end, "<?"))
                        p = skip_past(p + 2, end, "?>");
                else if (starts(p, end, "<!DOCTYPE"))
                        return true;
                else
                        p++;
        }
        return false;
}

int tether_xml_read(const uint8_t *data, size_t len, const char *expected_root, xmlDoc **ret,
                    struct tether_diag *diag) {
        struct read_state st = {};
        xmlParserCtxtPtr ctxt = NULL;
        xmlDocPtr doc = NULL;
        xmlNodePtr root;
        bool well_formed;
        int r;

        if ((!data && len > 0) || !expected_root || !ret)
                return -EINVAL;
        if (len > INT_MAX)
                return tether_diag_set(diag, TETHER_DIAG_NOT_WELL_FORMED, "document too large");
        if (!utf8_is_valid(data, len))
                return tether_diag_set(diag, TETHER_DIAG_NOT_UTF8, "body is not valid UTF-8");
        /* NUL is never allowed in XML, and NULs are what would make libxml2
         * guess UTF-16 or UCS-4 from the first bytes. */
        if (len > 0 && memchr(data, 0, len))
                return tether_diag_set(diag, TETHER_DIAG_NOT_WELL_FORMED, "body contains a NUL byte");
        if (len == 0)
                return tether_diag_set(diag, TETHER_DIAG_NOT_WELL_FORMED, "empty document");

        xmlInitParser();
        ctxt = xmlCreateMemoryParserCtxt((const char *)data, (int)len);
        if (!ctxt)
                return -ENOMEM;
        xmlCtxtUseOptions(ctxt, TETHER_XML_OPTIONS);
        ctxt->_private = &st;
        ctxt->sax->serror = on_structured_error;
        ctxt->sax->internalSubset = on_internal_subset;
        ctxt->sax->externalSubset = on_external_subset;
        ctxt->sax->entityDecl = on_entity_decl;
        ctxt->sax->resolveEntity = on_resolve_entity;
        ctxt->loadsubset = 0;
        ctxt->replaceEntities = 0;
        ctxt->validate = 0;

        (void)xmlParseDocument(ctxt);
        well_formed = ctxt->wellFormed;
        doc = ctxt->myDoc;
        ctxt->myDoc = NULL;
        ctxt->_private = NULL;
        xmlFreeParserCtxt(ctxt);

        if (st.doctype || (doc && (doc->intSubset || doc->extSubset))) {
                r = tether_diag_set(diag, TETHER_DIAG_DOCTYPE, "document has a DOCTYPE");
                goto fail;
        }
        if (!well_formed || !doc) {
                if (has_doctype_markup(data, len))
                        r = tether_diag_set(diag, TETHER_DIAG_DOCTYPE, "document has a DOCTYPE");
                else
                        r = tether_diag_set(diag, TETHER_DIAG_NOT_WELL_FORMED, "not well-formed: %s",
                                            st.have_error ? st.error : "parse error");
                goto fail;
        }
        root = xmlDocGetRootElement(doc);
        if (!root) {
                r = tether_diag_set(diag, TETHER_DIAG_NOT_WELL_FORMED, "not well-formed: no root element");
                goto fail;
        }
        if (root->ns || !xmlStrEqual(root->name, BAD_CAST expected_root)) {
                r = tether_diag_set(diag, TETHER_DIAG_WRONG_ROOT,
                                    "root element is '%.64s%s%.64s', expected '%s'",
                                    root->ns && root->ns->href ? (const char *)root->ns->href : "",
                                    root->ns ? ":" : "", (const char *)root->name, expected_root);
                goto fail;
        }

        *ret = doc;
        return 0;

fail:
        xmlFreeDoc(doc);
        return r;
}

int tether_xml_child(xmlNode *parent, const char *name, xmlNode **ret, struct tether_diag *diag) {
        xmlNode *found = NULL;

        if (!parent || !name || !ret)
                return -EINVAL;
        for (xmlNode *c = parent->children; c; c = c->next) {
                if (c->type != XML_ELEMENT_NODE || c->ns || !xmlStrEqual(c->name, BAD_CAST name))
                        continue;
                if (found)
                        return tether_diag_set(diag, TETHER_DIAG_DUPLICATE_ELEMENT,
                                               "duplicated element '%s' in '%s'", name,
                                               (const char *)parent->name);
                found = c;
        }
        if (!found)
                return 0;
        *ret = found;
        return 1;
}

int tether_xml_text(xmlNode *node, char **ret) {
        size_t total = 0, off = 0;
        char *s;

        if (!node || !ret)
                return -EINVAL;
        /* Only the element's own text and CDATA: a nested element is an
         * unknown element and is ignored, like everywhere else. */
        for (xmlNode *c = node->children; c; c = c->next)
                if ((c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE) && c->content)
                        total += strlen((const char *)c->content);
        s = malloc(total + 1);
        if (!s)
                return -ENOMEM;
        for (xmlNode *c = node->children; c; c = c->next)
                if ((c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE) && c->content) {
                        size_t n = strlen((const char *)c->content);

                        memcpy(s + off, c->content, n);
                        off += n;
                }
        s[off] = '\0';
        *ret = s;
        return 0;
}
