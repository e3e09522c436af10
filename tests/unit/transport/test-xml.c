/* SPDX-License-Identifier: Apache-2.0 */
/* tether_xml_read and friends: the one gate for untrusted XML. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "transport/xml.h"

/* Reads s as a document rooted at root; returns the result and fills diag. */
static int read_str(const char *s, const char *root, xmlDoc **doc, struct tether_diag *diag) {
        memset(diag, 0, sizeof(*diag));
        return tether_xml_read((const uint8_t *)s, strlen(s), root, doc, diag);
}

static void expect_fail(const char *s, const char *root, enum tether_diag_kind kind) {
        struct tether_diag diag;
        xmlDoc *doc = NULL;

        assert_int_equal(read_str(s, root, &doc, &diag), -EBADMSG);
        assert_null(doc);
        if (diag.kind != kind)
                fail_msg("input %s: expected %s, got %s (%s)", s, tether_diag_kind_name(kind),
                         tether_diag_kind_name(diag.kind), diag.text);
        assert_true(diag.text[0] != '\0');
}

static void test_reads_good_document(void **state) {
        struct tether_diag diag;
        xmlDoc *doc = NULL;
        xmlNode *root, *child = NULL;
        char *text = NULL;

        assert_int_equal(read_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                                  "<BgbAckMessage><TaskGUID>x&lt;&amp;&#65;</TaskGUID></BgbAckMessage>\n",
                                  "BgbAckMessage", &doc, &diag),
                         0);
        root = xmlDocGetRootElement(doc);
        assert_int_equal(tether_xml_child(root, "TaskGUID", &child, &diag), 1);
        assert_int_equal(tether_xml_text(child, &text), 0);
        assert_string_equal(text, "x<&A");
        free(text);
        xmlFreeDoc(doc);
}

static void test_not_utf8(void **state) {
        /* 0xC3 0x28: a lead byte followed by a non-continuation byte. */
        expect_fail("<a>\xc3\x28</a>", "a", TETHER_DIAG_NOT_UTF8);
        /* Overlong encoding of '<'. */
        expect_fail("<a>\xc0\xbc</a>", "a", TETHER_DIAG_NOT_UTF8);
        /* Overlong three-byte '/' in an attribute. */
        expect_fail("<a b=\"\xe0\x80\xaf\"/>", "a", TETHER_DIAG_NOT_UTF8);
        /* A UTF-16 byte order mark. */
        expect_fail("\xff\xfe<\0a\0/\0>\0", "a", TETHER_DIAG_NOT_UTF8);
}

static void test_nul_and_empty(void **state) {
        struct tether_diag diag = {};
        xmlDoc *doc = NULL;
        static const uint8_t with_nul[] = {'<', 0, 'a', 0, '/', 0, '>', 0};

        assert_int_equal(tether_xml_read(with_nul, sizeof(with_nul), "a", &doc, &diag), -EBADMSG);
        assert_int_equal(diag.kind, TETHER_DIAG_NOT_WELL_FORMED);
        expect_fail("", "a", TETHER_DIAG_NOT_WELL_FORMED);
        expect_fail("   ", "a", TETHER_DIAG_NOT_WELL_FORMED);
}

static void test_encoding_declaration_ignored(void **state) {
        struct tether_diag diag;
        xmlDoc *doc = NULL;
        char *text = NULL;

        /* The bytes are UTF-8; a declaration claiming Latin-1 must not make
         * the parser transcode them. */
        assert_int_equal(
                read_str("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><a>\xc3\xa9</a>", "a", &doc, &diag),
                0);
        assert_int_equal(tether_xml_text(xmlDocGetRootElement(doc), &text), 0);
        assert_string_equal(text, "\xc3\xa9");
        free(text);
        xmlFreeDoc(doc);
}

static void test_doctype(void **state) {
        expect_fail("<!DOCTYPE a><a/>", "a", TETHER_DIAG_DOCTYPE);
        expect_fail("<?xml version=\"1.0\"?>\n<!-- c -->\n<!DOCTYPE a SYSTEM \"a.dtd\">\n<a/>", "a",
                    TETHER_DIAG_DOCTYPE);
        expect_fail("<!DOCTYPE a PUBLIC \"-//X//Y//EN\" \"http://127.0.0.1:1/x.dtd\"><a/>", "a",
                    TETHER_DIAG_DOCTYPE);
        /* Misplaced: not well-formed, still reported as a DOCTYPE. */
        expect_fail("<a/><!DOCTYPE a>", "a", TETHER_DIAG_DOCTYPE);
        expect_fail("<a><!DOCTYPE a></a>", "a", TETHER_DIAG_DOCTYPE);
}

static void test_doctype_text_in_comment_and_cdata_is_fine(void **state) {
        struct tether_diag diag;
        xmlDoc *doc = NULL;
        char *text = NULL;

        assert_int_equal(read_str("<!-- <!DOCTYPE a> --><a><![CDATA[<!DOCTYPE a>]]></a>", "a", &doc, &diag),
                         0);
        assert_int_equal(tether_xml_text(xmlDocGetRootElement(doc), &text), 0);
        assert_string_equal(text, "<!DOCTYPE a>");
        free(text);
        xmlFreeDoc(doc);
}

static void test_internal_entities(void **state) {
        expect_fail("<!DOCTYPE a [<!ENTITY x \"expanded\">]><a>&x;</a>", "a", TETHER_DIAG_DOCTYPE);
        expect_fail("<!DOCTYPE a [<!ENTITY % p \"<!ENTITY x 'y'>\"> %p;]><a>&x;</a>", "a",
                    TETHER_DIAG_DOCTYPE);
        /* Without a DTD an entity reference is undeclared: not well-formed. */
        expect_fail("<a>&x;</a>", "a", TETHER_DIAG_NOT_WELL_FORMED);
}

static double now_seconds(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_billion_laughs_fails_fast(void **state) {
        static const char doc[] =
                "<?xml version=\"1.0\"?>\n"
                "<!DOCTYPE lolz [\n"
                " <!ENTITY lol \"lol\">\n"
                " <!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\n"
                " <!ENTITY lol2 \"&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;\">\n"
                " <!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">\n"
                " <!ENTITY lol4 \"&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;\">\n"
                " <!ENTITY lol5 \"&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;\">\n"
                " <!ENTITY lol6 \"&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;\">\n"
                " <!ENTITY lol7 \"&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;\">\n"
                " <!ENTITY lol8 \"&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;\">\n"
                " <!ENTITY lol9 \"&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;\">\n"
                "]>\n"
                "<lolz>&lol9;</lolz>\n";
        double start = now_seconds();

        for (int i = 0; i < 100; i++)
                expect_fail(doc, "lolz", TETHER_DIAG_DOCTYPE);
        /* 100 rejections well under a second even with sanitizers: nothing
         * is expanded. */
        assert_true(now_seconds() - start < 1.0);
}

static void test_external_entity_never_fetched(void **state) {
        static const char secret[] = "XXE-SECRET-4f1c9a0e";
        char dir[] = "/tmp/tether-test-xml-XXXXXX";
        char path[256], doc[1024], param[256];
        struct tether_diag diag;
        xmlDoc *out = NULL;
        int fd;

        assert_non_null(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/secret.txt", dir);
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, secret, strlen(secret)), (ssize_t)strlen(secret));
        close(fd);

        /* A general external entity used in content. */
        snprintf(doc, sizeof(doc),
                 "<?xml version=\"1.0\"?><!DOCTYPE a [<!ENTITY xxe SYSTEM \"file://%s\">]><a>&xxe;</a>",
                 path);
        memset(&diag, 0, sizeof(diag));
        assert_int_equal(tether_xml_read((const uint8_t *)doc, strlen(doc), "a", &out, &diag), -EBADMSG);
        assert_null(out);
        assert_int_equal(diag.kind, TETHER_DIAG_DOCTYPE);
        assert_null(strstr(diag.text, secret));

        /* A parameter entity pulling in an external DTD fragment. */
        snprintf(param, sizeof(param), "%s/evil.dtd", dir);
        fd = open(param, O_WRONLY | O_CREAT | O_EXCL, 0600);
        assert_true(fd >= 0);
        snprintf(doc, sizeof(doc), "<!ENTITY leak \"%s\">", secret);
        assert_int_equal(write(fd, doc, strlen(doc)), (ssize_t)strlen(doc));
        close(fd);
        snprintf(doc, sizeof(doc),
                 "<!DOCTYPE a [<!ENTITY %% ext SYSTEM \"file://%s\"> %%ext;]><a>&leak;</a>", param);
        memset(&diag, 0, sizeof(diag));
        assert_int_equal(tether_xml_read((const uint8_t *)doc, strlen(doc), "a", &out, &diag), -EBADMSG);
        assert_null(out);
        assert_int_equal(diag.kind, TETHER_DIAG_DOCTYPE);
        assert_null(strstr(diag.text, secret));

        /* An external DTD as the DOCTYPE's system identifier. */
        snprintf(doc, sizeof(doc), "<!DOCTYPE a SYSTEM \"file://%s\"><a>&leak;</a>", param);
        memset(&diag, 0, sizeof(diag));
        assert_int_equal(tether_xml_read((const uint8_t *)doc, strlen(doc), "a", &out, &diag), -EBADMSG);
        assert_int_equal(diag.kind, TETHER_DIAG_DOCTYPE);
        assert_null(strstr(diag.text, secret));

        unlink(param);
        unlink(path);
        rmdir(dir);
}

static void test_not_well_formed_is_silent(void **state) {
        char tmpl[] = "/tmp/tether-test-xml-stderr-XXXXXX";
        struct tether_diag diag;
        xmlDoc *doc = NULL;
        struct stat st;
        int fd, saved;

        fd = mkstemp(tmpl);
        assert_true(fd >= 0);
        fflush(stderr);
        saved = dup(STDERR_FILENO);
        assert_true(saved >= 0);
        assert_true(dup2(fd, STDERR_FILENO) >= 0);

        memset(&diag, 0, sizeof(diag));
        assert_int_equal(read_str("<a><b></a>", "a", &doc, &diag), -EBADMSG);

        fflush(stderr);
        assert_true(dup2(saved, STDERR_FILENO) >= 0);
        close(saved);
        assert_int_equal(fstat(fd, &st), 0);
        close(fd);
        unlink(tmpl);

        assert_int_equal(diag.kind, TETHER_DIAG_NOT_WELL_FORMED);
        /* libxml2's own message, with a line number, ends up in the diag. */
        assert_non_null(strstr(diag.text, "line 1"));
        assert_int_equal(st.st_size, 0);

        expect_fail("<a>", "a", TETHER_DIAG_NOT_WELL_FORMED);
        expect_fail("<a></b>", "a", TETHER_DIAG_NOT_WELL_FORMED);
        expect_fail("<a x=1/>", "a", TETHER_DIAG_NOT_WELL_FORMED);
        expect_fail("<a x=\"1\" x=\"2\"/>", "a", TETHER_DIAG_NOT_WELL_FORMED);
        expect_fail("<a/><b/>", "a", TETHER_DIAG_NOT_WELL_FORMED);
        expect_fail("text", "a", TETHER_DIAG_NOT_WELL_FORMED);
        expect_fail("<a>\x01</a>", "a", TETHER_DIAG_NOT_WELL_FORMED);
}

static void test_wrong_root(void **state) {
        expect_fail("<BgbAckMessage/>", "BgbResponseMessage", TETHER_DIAG_WRONG_ROOT);
        expect_fail("<a xmlns=\"urn:x\"/>", "a", TETHER_DIAG_WRONG_ROOT);
        expect_fail("<x:a xmlns:x=\"urn:x\"/>", "a", TETHER_DIAG_WRONG_ROOT);
        expect_fail("<A/>", "a", TETHER_DIAG_WRONG_ROOT);
}

static void test_child_and_text(void **state) {
        struct tether_diag diag;
        xmlDoc *doc = NULL;
        xmlNode *root, *n = NULL;
        char *text = NULL;

        assert_int_equal(read_str("<r><one>1</one><two/><two/><e></e><c>a<![CDATA[<b>]]><x>ignored</x>c</c>"
                                  "<y:one xmlns:y=\"urn:y\">ns</y:one></r>",
                                  "r", &doc, &diag),
                         0);
        root = xmlDocGetRootElement(doc);

        assert_int_equal(tether_xml_child(root, "none", &n, &diag), 0);
        assert_int_equal(tether_xml_child(root, "one", &n, &diag), 1);
        assert_int_equal(tether_xml_text(n, &text), 0);
        assert_string_equal(text, "1");
        free(text);

        memset(&diag, 0, sizeof(diag));
        assert_int_equal(tether_xml_child(root, "two", &n, &diag), -EBADMSG);
        assert_int_equal(diag.kind, TETHER_DIAG_DUPLICATE_ELEMENT);
        assert_non_null(strstr(diag.text, "two"));

        assert_int_equal(tether_xml_child(root, "e", &n, &diag), 1);
        assert_int_equal(tether_xml_text(n, &text), 0);
        assert_string_equal(text, "");
        free(text);

        assert_int_equal(tether_xml_child(root, "c", &n, &diag), 1);
        assert_int_equal(tether_xml_text(n, &text), 0);
        assert_string_equal(text, "a<b>c");
        free(text);
        xmlFreeDoc(doc);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_reads_good_document),
                cmocka_unit_test(test_not_utf8),
                cmocka_unit_test(test_nul_and_empty),
                cmocka_unit_test(test_encoding_declaration_ignored),
                cmocka_unit_test(test_doctype),
                cmocka_unit_test(test_doctype_text_in_comment_and_cdata_is_fine),
                cmocka_unit_test(test_internal_entities),
                cmocka_unit_test(test_billion_laughs_fails_fast),
                cmocka_unit_test(test_external_entity_never_fetched),
                cmocka_unit_test(test_not_well_formed_is_silent),
                cmocka_unit_test(test_wrong_root),
                cmocka_unit_test(test_child_and_text),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
