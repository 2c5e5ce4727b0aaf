package io.pikv.operator.status;

import io.pikv.api.v1alpha1.PiKVClusterSpec;
import io.pikv.operator.TestClusters;
import org.junit.jupiter.api.Test;

import static org.assertj.core.api.Assertions.assertThat;

/** status.lastValidSpec round trips, also when another operator version wrote it. */
class StatusJsonTest {
    @Test
    void aSavedSpecWithAFieldThisVersionDoesNotKnowStillReads() {
        PiKVClusterSpec spec = TestClusters.small("demo", "ns").getSpec();
        String json = StatusJson.write(spec);
        String fromNewer = json.substring(0, json.length() - 1) + ",\"fieldOfALaterVersion\":{\"x\":1}}";
        PiKVClusterSpec read = StatusJson.read(fromNewer, PiKVClusterSpec.class);
        assertThat(read).isNotNull();
        assertThat(StatusJson.write(read)).isEqualTo(json);
        assertThat(StatusJson.read("not json", PiKVClusterSpec.class)).isNull();
    }
}
