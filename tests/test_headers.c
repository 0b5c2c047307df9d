/* Header helpers: tenant, correlation ID, W3C traceparent. */
#include "parti.h"

#include <criterion/criterion.h>
#include <string.h>

static parti_msg msg_with(const parti_header *h, int n) {
    parti_msg m;
    memset(&m, 0, sizeof m);
    m.headers = h;
    m.header_count = n;
    return m;
}

Test(headers, tenant_and_correlation_ids_in_either_spelling_and_any_case) {
    static const parti_header a[] = {{"X-Tenant-Id", "acme"}, {"Correlation-ID", "c-1"}};
    static const parti_header b[] = {{"tenant-id", "globex"}, {"x-correlation-id", "c-2"}, {"correlation-id", "c-3"}};
    parti_msg m = msg_with(a, 2);
    cr_assert_str_eq(parti_msg_tenant_id(&m), "acme");
    cr_assert_str_eq(parti_msg_correlation_id(&m), "c-1");
    m = msg_with(b, 3);
    cr_assert_str_eq(parti_msg_tenant_id(&m), "globex");
    cr_assert_str_eq(parti_msg_correlation_id(&m), "c-2"); /* x- first */
    m = msg_with(NULL, 0);
    cr_assert_null(parti_msg_tenant_id(&m));
    cr_assert_null(parti_msg_correlation_id(NULL));
    cr_assert_null(parti_msg_header(&m, "x"));
    cr_assert_str_eq(parti_msg_header_nocase(&(parti_msg){.headers = a, .header_count = 2}, "x-tenant-ID"), "acme");
}

Test(headers, traceparent_is_parsed_strictly) {
    char trace[33], parent[17];
    uint8_t flags = 9;
    static const parti_header h[] = {{"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}};
    parti_msg m = msg_with(h, 1);
    cr_assert_eq(parti_traceparent_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", trace, parent,
                                         &flags), PARTI_ERR_OK);
    cr_assert_str_eq(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
    cr_assert_str_eq(parent, "00f067aa0ba902b7");
    cr_assert_eq(flags, 1);
    cr_assert_eq(parti_msg_trace_id(&m, trace), PARTI_ERR_OK);
    cr_assert_str_eq(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
    /* a later version may carry more fields */
    cr_assert_eq(parti_traceparent_parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff-extra", trace, NULL,
                                         &flags), PARTI_ERR_OK);
    cr_assert_eq(flags, 255);
    {
        static const char *const bad[] = {
            "", "00", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* version ff */
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",        /* zero trace id */
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",        /* zero parent */
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",        /* uppercase */
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  /* 00 is exactly 55 */
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",       /* no '-' before more */
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        };
        size_t i;
        for (i = 0; i < sizeof bad / sizeof *bad; i++) {
            cr_assert_eq(parti_traceparent_parse(bad[i], trace, parent, &flags), PARTI_ERR_INVALID_ARGUMENT, "%s",
                         bad[i]);
            cr_assert_str_eq(trace, "");
        }
    }
    cr_assert_eq(parti_traceparent_parse(NULL, NULL, NULL, NULL), PARTI_ERR_INVALID_ARGUMENT);
    m = msg_with(NULL, 0);
    cr_assert_eq(parti_msg_trace_id(&m, trace), PARTI_ERR_KEY_NOT_FOUND);
}
