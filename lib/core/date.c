/* The HTTP Date header (RFC 9110 §5.6.7, IMF-fixdate), formatted once a second. */
#include <stdio.h>
#include <time.h>

#include "internal.h"

void sq__date_format(int64_t sec, char out[30])
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    time_t t = (time_t)sec;
    if (gmtime_r(&t, &tm) == NULL || tm.tm_year + 1900 > 9999 || tm.tm_year + 1900 < 0) {
        snprintf(out, 30, "Thu, 01 Jan 1970 00:00:00 GMT");
        return;
    }
    snprintf(out, 30, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday], tm.tm_mday,
             months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

const char *sq__date_get(sq__date_cache_t *dc, uint64_t now)
{
    if (now < dc->until)
        return dc->text;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    if ((uint64_t)ts.tv_sec != dc->sec || dc->text[0] == '\0') {
        sq__date_format(ts.tv_sec, dc->text);
        dc->sec = (uint64_t)ts.tv_sec;
    }
    /* the second read ends in at least this many whole milliseconds of loop time: `now`
     * is not later than the clock was read */
    dc->until = now + (uint64_t)(1000000000 - ts.tv_nsec) / 1000000;
    return dc->text;
}
