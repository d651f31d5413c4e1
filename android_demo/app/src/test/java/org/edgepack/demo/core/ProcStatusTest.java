package org.edgepack.demo.core;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

class ProcStatusTest {

    @Test
    void readsPeakAndCurrentResidentSetInBytes() {
        String status = "Name:\tedgepack.demo\nVmPeak:\t 2000000 kB\nVmHWM:\t  812344 kB\nVmRSS:\t  640000 kB\nThreads:\t12\n";
        ProcStatus p = ProcStatus.parse(status);
        assertEquals(812344L * 1024, p.peakRssBytes);
        assertEquals(640000L * 1024, p.rssBytes);
    }

    @Test
    void missingFieldsAreMinusOne() {
        ProcStatus p = ProcStatus.parse("Name:\tx\nVmRSS:\tlots kB\n");
        assertEquals(-1, p.peakRssBytes);
        assertEquals(-1, p.rssBytes);
    }

    @Test
    void readsThisProcessOnLinux() throws Exception {
        ProcStatus p = ProcStatus.read();  // the JVM's own /proc/self/status, as the app reads its own
        assertTrue(p.rssBytes > 1024 * 1024, "VmRSS " + p.rssBytes);
        assertTrue(p.peakRssBytes >= p.rssBytes, p.peakRssBytes + " < " + p.rssBytes);
    }
}
