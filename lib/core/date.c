/* The HTTP Date header (RFC 9110 §5.6.7, IMF-fixdate), formatted once a second. */
#include <stdio.h>
#include <time.h>

#include "internal.h"

const char *sq__date_get(sq__date_cache_t *dc)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    if ((uint64_t)ts.tv_sec != dc->sec || dc->text[0] == '\0') {
        static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
        static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
        struct tm tm;
        time_t t = ts.tv_sec;
        gmtime_r(&t, &tm);
        snprintf(dc->text, sizeof(dc->text), "%s, %02d %s %04d %02d:%02d:%02d GMT",
                 days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900,
                 tm.tm_hour, tm.tm_min, tm.tm_sec);
        dc->sec = (uint64_t)ts.tv_sec;
    }
    return dc->text;
}
