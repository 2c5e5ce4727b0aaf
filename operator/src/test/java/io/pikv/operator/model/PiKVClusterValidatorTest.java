package io.pikv.operator.model;

import io.fabric8.kubernetes.api.model.Quantity;
import io.fabric8.kubernetes.api.model.ResourceRequirementsBuilder;
import io.pikv.api.v1alpha1.KafkaSpec;
import io.pikv.api.v1alpha1.KvDtype;
import io.pikv.api.v1alpha1.ModelSpec;
import io.pikv.api.v1alpha1.PiKVCluster;
import io.pikv.api.v1alpha1.SchedulingPolicy;
import io.pikv.api.v1alpha1.SecretRef;
import io.pikv.kv.ModelShape;
import io.pikv.kv.scheduling.BlockPolicies;
import io.pikv.operator.TestClusters;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;
import java.util.stream.Stream;

import static org.assertj.core.api.Assertions.assertThat;

/** Table of specs: each case breaks one rule and expects the field it names and words of the message. */
class PiKVClusterValidatorTest {

    static Stream<Arguments> invalid() {
        return Stream.of(
                bad("topK above experts", c -> c.getSpec().getModel().setTopK(9),
                        "spec.model.topK", "cannot be routed to more experts"),
                bad("qHeads not a multiple of kvHeads", c -> c.getSpec().getModel().setQHeads(7),
                        "spec.model.qHeads", "not a multiple of spec.model.kvHeads"),
                bad("layers missing", c -> c.getSpec().getModel().setLayers(null),
                        "spec.model.layers", "is required"),
                bad("headDim over the engine's bound", c -> c.getSpec().getModel().setHeadDim(4096),
                        "spec.model.headDim", "[1, 1024]"),
                bad("model missing", c -> c.getSpec().setModel(null), "spec.model", "is required"),
                bad("a utility weight past its bound", c -> {
                    c.getSpec().getScheduling().setPolicy(SchedulingPolicy.UTILITY);
                    c.getSpec().getScheduling().setParameters(Map.of("attention", 1e13));
                }, "spec.scheduling.parameters.attention", "at most 1.0E12"),
                bad("a recency weight over a tiny scale", c -> {
                    c.getSpec().getScheduling().setPolicy(SchedulingPolicy.UTILITY);
                    c.getSpec().getScheduling().setParameters(Map.of("recency", 1.0, "recencyScale", 1e-300));
                }, "spec.scheduling.parameters.recencyScale", "raise recencyScale or lower recency"),
                bad("a tiny recency scale under the default recency weight", c -> {
                    c.getSpec().getScheduling().setPolicy(SchedulingPolicy.UTILITY);
                    c.getSpec().getScheduling().setParameters(Map.of("recencyScale", 1e-13));
                }, "spec.scheduling.parameters.recencyScale", "raise recencyScale or lower recency"),
                bad("a window past an int", c -> {
                    c.getSpec().getScheduling().setPolicy(SchedulingPolicy.STREAMING);
                    c.getSpec().getScheduling().setParameters(Map.of("window", 3e9));
                }, "spec.scheduling.parameters.window", "is 3.0E9; it must be a whole number in [0, 2147483647]"),
                bad("a reserved topic name", c -> {
                    KafkaSpec k = new KafkaSpec();
                    k.setBootstrapServers("kafka:9092");
                    k.getTopics().setEvents("..");
                    c.getSpec().setKafka(k);
                },
                        "spec.kafka.topics.events", "'..' is not a Kafka topic name (1 to 249 letters, digits, '.', "
                        + "'_' and '-', other than . and ..)"),
                bad("a priority class name starting with a dash", c -> c.getSpec().getPlacement()
                        .setPriorityClassName("-p"), "spec.placement.priorityClassName", "'-p' is not a PriorityClass "
                        + "name (dot-separated parts of lower-case letters, digits and '-', each starting and ending "
                        + "with a letter or digit; at most 253 characters)"),
                bad("more shards than experts", c -> c.getSpec().setShards(9),
                        "spec.shards", "every shard owns at least one expert"),
                bad("zero shards", c -> c.getSpec().setShards(0), "spec.shards", "[1, 256]"),
                bad("budget not a quantity", c -> c.getSpec().setMemoryPerShard(new Quantity("lots")),
                        "spec.memoryPerShard", "not a quantity"),
                bad("budget of a vast exponent (judged on the exponent, not expanded)",
                        c -> c.getSpec().setMemoryPerShard(new Quantity("1e400000000")),
                        "spec.memoryPerShard", "is 1e400000000; it must be positive and at most 4Ti"),
                bad("budget of a vanishing fraction (rounded up to a byte, not expanded)",
                        c -> c.getSpec().setMemoryPerShard(new Quantity("1e-400000000")),
                        "spec.memoryPerShard", "less than one fp16 page per layer"),
                bad("cpu request of a vast exponent", c -> c.getSpec().getSidecar().setResources(
                        new ResourceRequirementsBuilder().addToRequests("cpu", new Quantity("1e300000000")).build()),
                        "spec.sidecar.resources.requests.cpu", "'1e300000000' is beyond what a container can be given"),
                bad("budget under one page per layer", c -> c.getSpec().setMemoryPerShard(new Quantity("32Ki")),
                        "spec.memoryPerShard", "less than one fp16 page per layer"),
                bad("int8 with a head dim the int8 pages cannot hold", c -> {
                    c.getSpec().getModel().setHeadDim(66);
                    c.getSpec().getCompression().setMethod("int8");
                }, "spec.compression.method", "multiple of 4"),
                bad("unknown compression part", c -> c.getSpec().getCompression().setMethod("int4"),
                        "spec.compression.method", "unknown part 'int4'"),
                bad("two low-rank methods", c -> c.getSpec().getCompression().setMethod("lowrank+lowrank-expert"),
                        "spec.compression.method", "two low-rank methods"),
                bad("knob of another method", c -> {
                    c.getSpec().getCompression().setMethod("int8");
                    c.getSpec().getCompression().setParameters(Map.of("keyRank", 32.0));
                }, "spec.compression.parameters.keyRank", "not a knob of 'int8'"),
                bad("low-rank compression, which the shards do not apply", c -> {
                    c.getSpec().getCompression().setMethod("lowrank-expert+int8");
                    c.getSpec().getCompression().setParameters(Map.of("keyRank", 32.0, "valueRank", 48.0,
                            "outlierDirections", 2.0, "minExpertTokens", 128.0));
                }, "spec.compression.method", "the shards do not apply lowrank-expert compression"),
                bad("pyramid without a budget", c -> c.getSpec().getCompression().setMethod("pyramid+int8"),
                        "spec.compression.parameters.budget", "is required by pyramid"),
                bad("pyramid with a GPU", c -> {
                    c.getSpec().getCompression().setMethod("pyramid");
                    c.getSpec().getCompression().setParameters(Map.of("budget", 0.5));
                    c.getSpec().getGpu().setEnabled(true);
                }, "spec.gpu.enabled", "pyramid budgets choose the tokens kept by attention weights"),
                bad("pyramid sinks and window beyond what a shard counts", c -> {
                    c.getSpec().getCompression().setMethod("pyramid");
                    c.getSpec().getCompression().setParameters(Map.of("budget", 0.5, "sinks", 2e9, "window", 2e9));
                }, "spec.compression.parameters.window", "lower sinks or window"),
                bad("a pyramid window that with the sidecar's default sinks (4) passes what a shard counts", c -> {
                    c.getSpec().getCompression().setMethod("pyramid");
                    c.getSpec().getCompression().setParameters(Map.of("budget", 0.25, "window", 2147483647.0));
                }, "spec.compression.parameters.window", "lower sinks or window"),
                bad("a pyramid window past the positions a layer holds (budgets would be refused at every attention)",
                        c -> {
                            c.getSpec().getCompression().setMethod("pyramid");
                            c.getSpec().getCompression().setParameters(Map.of("budget", 0.25, "window", 2e7));
                        }, "spec.compression.parameters.window", "more than 16777216 tokens per layer"),
                bad("pyramid budget above 1", c -> {
                    c.getSpec().getCompression().setMethod("pyramid");
                    c.getSpec().getCompression().setParameters(Map.of("budget", 1.5));
                }, "spec.compression.parameters.budget", "(0, 1]"),
                bad("rank above head dim", c -> {
                    c.getSpec().getCompression().setMethod("lowrank");
                    c.getSpec().getCompression().setParameters(Map.of("keyRank", 65.0));
                }, "spec.compression.parameters.keyRank", "whole number in [1, 64]"),
                bad("policy knob lru does not have", c -> c.getSpec().getScheduling()
                        .setParameters(Map.of("window", 10.0)), "spec.scheduling.parameters.window",
                        "not a knob of policy lru"),
                bad("fractional window", c -> {
                    c.getSpec().getScheduling().setPolicy(SchedulingPolicy.STREAMING);
                    c.getSpec().getScheduling().setParameters(Map.of("window", 10.5));
                }, "spec.scheduling.parameters.window", "whole number"),
                bad("adaptive among candidates", c -> c.getSpec().getScheduling()
                        .setCandidates(List.of(SchedulingPolicy.LRU, SchedulingPolicy.ADAPTIVE)),
                        "spec.scheduling.candidates", "cannot be one"),
                bad("adaptive with one candidate", c -> {
                    c.getSpec().getScheduling().setPolicy(SchedulingPolicy.ADAPTIVE);
                    c.getSpec().getScheduling().setCandidates(List.of(SchedulingPolicy.LRU));
                }, "spec.scheduling.candidates", "at least two"),
                bad("policy outside its candidates", c -> {
                    c.getSpec().getScheduling().setPolicy(SchedulingPolicy.H2O);
                    c.getSpec().getScheduling().setCandidates(List.of(SchedulingPolicy.LRU, SchedulingPolicy.UTILITY));
                }, "spec.scheduling.policy", "not among"),
                bad("lambda out of range", c -> c.getSpec().getRouting().setLambda(-1.0),
                        "spec.routing.lambda", "[0, 10]"),
                bad("min above max shards", c -> {
                    c.getSpec().getAutoscaling().setMinShards(5);
                    c.getSpec().getAutoscaling().setMaxShards(3);
                }, "spec.autoscaling.minShards", "more than spec.autoscaling.maxShards"),
                bad("shards outside the autoscaling range", c -> {
                    c.getSpec().getAutoscaling().setEnabled(true);
                    c.getSpec().getAutoscaling().setMinShards(3);
                    c.getSpec().getAutoscaling().setMaxShards(6);
                }, "spec.shards", "outside the autoscaling range [3, 6]"),
                bad("an autoscaling floor beyond the experts", c -> {
                    c.getSpec().getAutoscaling().setEnabled(true);
                    c.getSpec().getAutoscaling().setMinShards(9);
                    c.getSpec().getAutoscaling().setMaxShards(16);
                }, "spec.autoscaling.minShards", "at most 8"),
                bad("more pages than a shard can address", c -> c.getSpec().setMemoryPerShard(new Quantity("2Ti")),
                        "spec.memoryPerShard", "more than one shard can address with fp16 pages of 16384 bytes "
                                + "(67108862 pages, 1099511595008 bytes): spread the KV over more shards"),
                bad("kafka without servers", c -> c.getSpec().setKafka(new KafkaSpec()),
                        "spec.kafka.bootstrapServers", "is required"),
                bad("kafka server without port", c -> {
                    KafkaSpec k = new KafkaSpec();
                    k.setBootstrapServers("kafka:9092,broker");
                    c.getSpec().setKafka(k);
                }, "spec.kafka.bootstrapServers", "'broker' is not host:port: give each broker with its port, e.g. kafka-0.kafka:9092"),
                bad("same topic twice", c -> {
                    KafkaSpec k = new KafkaSpec();
                    k.setBootstrapServers("kafka:9092");
                    k.getTopics().setControl("pikv.cache-events");
                    c.getSpec().setKafka(k);
                }, "spec.kafka.topics.control", "must be different topics"),
                bad("a topic left null that the other one's name meets as its default", c -> {
                    KafkaSpec k = new KafkaSpec();
                    k.setBootstrapServers("kafka:9092");
                    k.getTopics().setEvents(null);
                    k.getTopics().setControl("pikv.cache-events");
                    c.getSpec().setKafka(k);
                }, "spec.kafka.topics.control", "('pikv.cache-events', the default of the one left unset)"),
                bad("secret name with capitals", c -> {
                    KafkaSpec k = new KafkaSpec();
                    k.setBootstrapServers("kafka:9092");
                    k.setCredentialsSecret(new SecretRef("Kafka_Creds"));
                    c.getSpec().setKafka(k);
                }, "spec.kafka.credentialsSecret.name", "not a Secret name"),
                bad("gpu with a policy that ranks by attention", c -> {
                    c.getSpec().getGpu().setEnabled(true);
                    c.getSpec().getScheduling().setPolicy(SchedulingPolicy.H2O);
                }, "spec.gpu.enabled", "policy h2o ranks tokens by attention weights, which the GPU does not compute"),
                bad("gpu with an attention-ranked candidate", c -> {
                    c.getSpec().getGpu().setEnabled(true);
                    c.getSpec().getScheduling().setPolicy(SchedulingPolicy.LRU);
                    c.getSpec().getScheduling().setCandidates(List.of(SchedulingPolicy.LRU, SchedulingPolicy.UTILITY));
                }, "spec.gpu.enabled", "policy utility (a candidate) ranks tokens by attention weights, which the GPU "
                        + "does not compute: the shards would attend on the CPU and hold the GPU unused; with spec.gpu "
                        + "use candidates lru and streaming only (spec.scheduling.candidates)"),
                bad("gpu with fp32 pages", c -> {
                    c.getSpec().getGpu().setEnabled(true);
                    c.getSpec().getModel().setDtype(KvDtype.FP32);
                }, "spec.gpu.enabled", "the CUDA kernels read fp16 or int8 pages"),
                bad("gpu with adaptive over every policy (no candidates)", c -> {
                    c.getSpec().getGpu().setEnabled(true);
                    c.getSpec().getScheduling().setPolicy(SchedulingPolicy.ADAPTIVE);
                    c.getSpec().getScheduling().setCandidates(List.of());
                }, "spec.gpu.enabled", "policy h2o (a candidate: with no candidates listed, adaptive may choose any "
                        + "policy) ranks tokens by attention weights"),
                bad("node selector key", c -> c.getSpec().getPlacement().setNodeSelector(Map.of("pool name", "gpu")),
                        "spec.placement.nodeSelector", "'pool name' is not a label key"),
                bad("node selector value", c -> c.getSpec().getPlacement().setNodeSelector(
                        Map.of("cloud.example.com/pool", "gpu pool")), "spec.placement.nodeSelector.cloud.example.com/pool",
                        "'gpu pool' is not a label value"),
                bad("toleration operator", c -> c.getSpec().getPlacement().setTolerations(List.of(
                        new io.fabric8.kubernetes.api.model.TolerationBuilder().withKey("a").withOperator("In")
                                .build())), "spec.placement.tolerations[0].operator", "'In' is not an operator a toleration takes: use Exists or Equal"),
                bad("toleration Equal without a key", c -> c.getSpec().getPlacement().setTolerations(List.of(
                        new io.fabric8.kubernetes.api.model.TolerationBuilder().withValue("x").build())),
                        "spec.placement.tolerations[0].key", "is required with operator Equal"),
                bad("toleration Exists with a value", c -> c.getSpec().getPlacement().setTolerations(List.of(
                        new io.fabric8.kubernetes.api.model.TolerationBuilder().withKey("a").withOperator("Exists")
                                .withValue("x").build())), "spec.placement.tolerations[0].value",
                        "must be empty with operator Exists"),
                bad("toleration effect", c -> c.getSpec().getPlacement().setTolerations(List.of(
                        new io.fabric8.kubernetes.api.model.TolerationBuilder().withKey("a").withEffect("NoRun")
                                .build())), "spec.placement.tolerations[0].effect", "'NoRun' is not NoSchedule"),
                bad("toleration seconds without NoExecute", c -> c.getSpec().getPlacement().setTolerations(List.of(
                        new io.fabric8.kubernetes.api.model.TolerationBuilder().withKey("a").withEffect("NoSchedule")
                                .withTolerationSeconds(60L).build())), "spec.placement.tolerations[0].tolerationSeconds",
                        "applies to the NoExecute effect only"),
                bad("priority class name", c -> c.getSpec().getPlacement().setPriorityClassName("High_Priority"),
                        "spec.placement.priorityClassName", "'High_Priority' is not a PriorityClass name"),
                bad("priority class name with an empty label", c -> c.getSpec().getPlacement()
                        .setPriorityClassName("kv..high"), "spec.placement.priorityClassName", "is not a PriorityClass"),
                bad("node selector key with a dash after a dot", c -> c.getSpec().getPlacement().setNodeSelector(
                        Map.of("cloud.-x/pool", "gpu")), "spec.placement.nodeSelector", "is not a label key"),
                bad("image pull secret name", c -> c.getSpec().getSidecar().setImagePullSecrets(List.of(
                        new io.fabric8.kubernetes.api.model.LocalObjectReference("Registry Creds"))),
                        "spec.sidecar.imagePullSecrets[0].name", "'Registry Creds' is not a Secret name"),
                bad("image pull secret listed twice", c -> c.getSpec().getSidecar().setImagePullSecrets(List.of(
                        new io.fabric8.kubernetes.api.model.LocalObjectReference("regcred"),
                        new io.fabric8.kubernetes.api.model.LocalObjectReference("mirror"),
                        new io.fabric8.kubernetes.api.model.LocalObjectReference("regcred"))),
                        "spec.sidecar.imagePullSecrets[2].name", "'regcred' is listed twice"),
                bad("gpu resource name", c -> c.getSpec().getGpu().setResourceName("NVIDIA GPU"),
                        "spec.gpu.resourceName", "not an extended resource name"),
                bad("gpu resource name without a domain", c -> c.getSpec().getGpu().setResourceName("memory"),
                        "spec.gpu.resourceName", "use the device plugin's domain/name"),
                bad("gpu resource name of kubernetes.io", c -> c.getSpec().getGpu()
                        .setResourceName("kubernetes.io/gpu"), "spec.gpu.resourceName", "not an extended resource"),
                bad("gpu runtime class name", c -> c.getSpec().getGpu().setRuntimeClassName("Nvidia_Runtime"),
                        "spec.gpu.runtimeClassName", "'Nvidia_Runtime' is not a RuntimeClass name"),
                bad("gpu shards on arm64 nodes", c -> {
                    c.getSpec().getGpu().setEnabled(true);
                    c.getSpec().getPlacement().setNodeSelector(Map.of("kubernetes.io/arch", "arm64"));
                }, "spec.placement.nodeSelector.kubernetes.io/arch", "CUDA bindings are for linux x86-64 only"),
                bad("memory limit below the budget", c -> c.getSpec().getSidecar().setResources(
                        new ResourceRequirementsBuilder().addToLimits("memory", new Quantity("32Mi")).build()),
                        "spec.sidecar.resources", "leaves less than 548Mi (512Mi, 24Mi of heap for the "
                                + "bookkeeping of the entries the budget holds, and 12Mi, half of it again, for the "
                                + "collector) above spec.memoryPerShard"),
                bad("memory limit without room for an lrfu history", c -> {
                    // 1,048,576 remembered evictions at 96 bytes: 96Mi of heap beside the entries' 24Mi.
                    c.getSpec().getScheduling().setPolicy(SchedulingPolicy.LRFU);
                    c.getSpec().getScheduling().setParameters(Map.of("historyLimit", 1048576.0));
                    c.getSpec().getSidecar().setResources(new ResourceRequirementsBuilder()
                            .addToLimits("memory", new Quantity("600Mi")).build());
                }, "spec.sidecar.resources", "leaves less than 692Mi (512Mi, 120Mi of heap for the bookkeeping of the "
                        + "entries the budget holds and of the lrfu history (historyLimit), and 60Mi, half of it again, "
                        + "for the collector) above spec.memoryPerShard"),
                bad("memory limit just above the budget (no room for the JVM)", c -> {
                    c.getSpec().setMemoryPerShard(new Quantity("1Gi"));
                    c.getSpec().getSidecar().setResources(new ResourceRequirementsBuilder()
                            .addToLimits("memory", new Quantity("1535Mi")).build());
                }, "spec.sidecar.resources", "give at least 2112Mi, or leave it unset"),
                bad("memory request far below what the budget fills (the limit large enough)", c -> c.getSpec()
                        .getSidecar().setResources(new ResourceRequirementsBuilder()
                                .addToLimits("memory", new Quantity("4Gi"))
                                .addToRequests("memory", new Quantity("256Mi")).build()),
                        "spec.sidecar.resources.requests.memory", "256Mi is less than the 612Mi a shard holds once "
                                + "its budget (spec.memoryPerShard, 64Mi) is full"),
                bad("resource claims", c -> c.getSpec().getSidecar().setResources(new ResourceRequirementsBuilder()
                        .addNewClaim().withName("gpu").endClaim().build()),
                        "spec.sidecar.resources.claims", "not passed to the shard pods"),
                bad("request above limit", c -> c.getSpec().getSidecar().setResources(
                        new ResourceRequirementsBuilder().addToLimits("cpu", new Quantity("1"))
                                .addToRequests("cpu", new Quantity("2")).build()),
                        "spec.sidecar.resources.requests.cpu", "exceeds the limit"),
                bad("cpu request above the limit by less than a core", c -> c.getSpec().getSidecar().setResources(
                        new ResourceRequirementsBuilder().addToLimits("cpu", new Quantity("1200m"))
                                .addToRequests("cpu", new Quantity("1500m")).build()),
                        "spec.sidecar.resources.requests.cpu", "1500m exceeds the limit 1200m: lower the request or raise the limit"),
                bad("request that is not a quantity", c -> c.getSpec().getSidecar().setResources(
                        new ResourceRequirementsBuilder().addToRequests("cpu", new Quantity("abc")).build()),
                        "spec.sidecar.resources.requests.cpu", "not a quantity"),
                bad("memory request that is not a quantity, no limits", c -> c.getSpec().getSidecar().setResources(
                        new ResourceRequirementsBuilder().addToRequests("memory", new Quantity("abc")).build()),
                        "spec.sidecar.resources.requests.memory", "not a quantity"),
                bad("negative limit", c -> c.getSpec().getSidecar().setResources(
                        new ResourceRequirementsBuilder().addToLimits("cpu", new Quantity("-2")).build()),
                        "spec.sidecar.resources.limits.cpu", "is negative"),
                bad("memory limit beyond any machine (overflows a long)", c -> c.getSpec().getSidecar().setResources(
                        new ResourceRequirementsBuilder().addToLimits("memory", new Quantity("10Ei")).build()),
                        "spec.sidecar.resources", "memory 10Ei is too large: a shard container takes at most 8Ti"),
                bad("a resource the API server does not know", c -> c.getSpec().getSidecar().setResources(
                        new ResourceRequirementsBuilder().addToLimits("gpu", new Quantity("1")).build()),
                        "spec.sidecar.resources", "'gpu' is not a container resource"),
                bad("an extended resource requested without a limit", c -> c.getSpec().getSidecar().setResources(
                        new ResourceRequirementsBuilder().addToRequests("example.com/fpga", new Quantity("1")).build()),
                        "spec.sidecar.resources.limits.example.com/fpga", "cannot be overcommitted"),
                bad("an extended resource with request and limit apart", c -> c.getSpec().getSidecar().setResources(
                        new ResourceRequirementsBuilder().addToRequests("example.com/fpga", new Quantity("1"))
                                .addToLimits("example.com/fpga", new Quantity("2")).build()),
                        "spec.sidecar.resources.requests.example.com/fpga", "must equal its limit"),
                bad("a fractional extended resource", c -> c.getSpec().getSidecar().setResources(
                        new ResourceRequirementsBuilder().addToLimits("example.com/fpga", new Quantity("500m")).build()),
                        "spec.sidecar.resources", "example.com/fpga must be a whole number, got 0.5"),
                bad("huge pages requested without a limit", c -> c.getSpec().getSidecar().setResources(
                        new ResourceRequirementsBuilder().addToRequests("hugepages-2Mi", new Quantity("1Gi")).build()),
                        "spec.sidecar.resources.limits.hugepages-2Mi", "huge pages cannot be overcommitted"),
                bad("huge pages with request and limit apart", c -> c.getSpec().getSidecar().setResources(
                        new ResourceRequirementsBuilder().addToRequests("hugepages-2Mi", new Quantity("1Gi"))
                                .addToLimits("hugepages-2Mi", new Quantity("2Gi")).build()),
                        "spec.sidecar.resources.requests.hugepages-2Mi", "must equal its limit"),
                bad("huge pages without a page size", c -> c.getSpec().getSidecar().setResources(
                        new ResourceRequirementsBuilder().addToLimits("hugepages-x", new Quantity("1Gi")).build()),
                        "spec.sidecar.resources", "'hugepages-x' names no page size"),
                bad("huge pages not a whole number of pages", c -> c.getSpec().getSidecar().setResources(
                        new ResourceRequirementsBuilder().addToLimits("hugepages-1Gi", new Quantity("1536Mi")).build()),
                        "spec.sidecar.resources.limits.hugepages-1Gi", "not a whole number of 1Gi pages"),
                bad("the GPU given in resources as well as by spec.gpu", c -> {
                    c.getSpec().getGpu().setEnabled(true);
                    c.getSpec().getSidecar().setResources(new ResourceRequirementsBuilder()
                            .addToLimits("nvidia.com/gpu", new Quantity("1")).build());
                }, "spec.sidecar.resources", "nvidia.com/gpu is set by spec.gpu (perShard)"),
                bad("gpu resource name longer than 63 after the domain", c -> c.getSpec().getGpu()
                        .setResourceName("example.com/" + "g".repeat(64)), "spec.gpu.resourceName",
                        "not an extended resource name"),
                bad("gpu resource domain with a label ending in a dash", c -> c.getSpec().getGpu()
                        .setResourceName("a-.b/gpu"), "spec.gpu.resourceName", "not an extended resource name"),
                bad("gpu resource domain longer than requests.<domain> may be", c -> c.getSpec().getGpu()
                        .setResourceName(("d".repeat(60) + ".").repeat(4) + "abcdefgh.io/gpu"),
                        "spec.gpu.resourceName", "not an extended resource name"),
                bad("a GPU of another vendor than CUDA serves", c -> {
                    c.getSpec().getGpu().setEnabled(true);
                    c.getSpec().getGpu().setResourceName("amd.com/gpu");
                }, "spec.gpu.resourceName", "'amd.com/gpu' is not an NVIDIA device: the shards attend through CUDA"),
                bad("more GPUs per shard than a shard attends on", c -> {
                    c.getSpec().getGpu().setEnabled(true);
                    c.getSpec().getGpu().setPerShard(2);
                }, "spec.gpu.perShard", "is 2; a shard attends on one device (CUDA device 0 of its pod): use 1"),
                bad("image with a space", c -> c.getSpec().getSidecar().setImage("pikv/sidecar :1"),
                        "spec.sidecar.image", "not an image reference"),
                bad("image with an upper-case path", c -> c.getSpec().getSidecar().setImage("REGISTRY/pikv:1"),
                        "spec.sidecar.image", "'REGISTRY/pikv:1' is not an image reference"),
                bad("name too long", c -> c.getMetadata().setName("a".repeat(41)), "metadata.name", "more than 40"),
                bad("name starting with a digit", c -> c.getMetadata().setName("1pikv"),
                        "metadata.name", "starting with a letter"));
    }

    private static Arguments bad(String rule, Consumer<PiKVCluster> breakIt, String field, String words) {
        return Arguments.of(rule, breakIt, field, words);
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("invalid")
    void rejectsWithAnActionableMessage(String rule, Consumer<PiKVCluster> breakIt, String field, String words) {
        PiKVCluster c = TestClusters.small("demo", "ns");
        breakIt.accept(c);
        PiKVClusterValidator.Result result = PiKVClusterValidator.validate(c);
        assertThat(result.valid()).as(rule).isFalse();
        assertThat(result.violations()).as(rule)
                .anySatisfy(v -> {
                    assertThat(v.field()).isEqualTo(field);
                    assertThat(v.message()).contains(words);
                });
        assertThat(result.summary()).contains(field + ": ");
    }

    static Stream<Arguments> valid() {
        return Stream.of(
                Arguments.of("the small fixture", (Consumer<PiKVCluster>) c -> { }),
                Arguments.of("fp32 pages", (Consumer<PiKVCluster>) c -> c.getSpec().getModel().setDtype(KvDtype.FP32)),
                Arguments.of("GPU settings of another vendor while the GPU is off (nothing asks for a device)",
                        (Consumer<PiKVCluster>) c -> {
                            c.getSpec().getGpu().setResourceName("amd.com/gpu");
                            c.getSpec().getGpu().setPerShard(2);
                        }),
                Arguments.of("pyramid budgets on int8 pages", (Consumer<PiKVCluster>) c -> {
                    c.getSpec().getCompression().setMethod("pyramid+int8");
                    c.getSpec().getCompression().setParameters(Map.of("budget", 0.25, "beta", 20.0, "sinks", 4.0,
                            "window", 64.0));
                }),
                Arguments.of("adaptive over three candidates", (Consumer<PiKVCluster>) c -> {
                    c.getSpec().getScheduling().setPolicy(SchedulingPolicy.ADAPTIVE);
                    c.getSpec().getScheduling().setCandidates(List.of(SchedulingPolicy.LRU, SchedulingPolicy.H2O,
                            SchedulingPolicy.UTILITY));
                    c.getSpec().getScheduling().setParameters(Map.of("window", 4096.0, "margin", 0.005));
                }),
                Arguments.of("h2o with no recent window (heavy hitters alone), as a shard takes it",
                        (Consumer<PiKVCluster>) c -> {
                            c.getSpec().getScheduling().setPolicy(SchedulingPolicy.H2O);
                            c.getSpec().getScheduling().setParameters(Map.of("sinks", 0.0, "window", 0.0));
                        }),
                Arguments.of("kafka with credentials", (Consumer<PiKVCluster>) c -> {
                    KafkaSpec k = new KafkaSpec();
                    k.setBootstrapServers("kafka-0.kafka:9092,[::1]:9093,SASL_SSL://kafka_1.example:9094");
                    k.setCredentialsSecret(new SecretRef("kafka-creds"));
                    c.getSpec().setKafka(k);
                }),
                Arguments.of("autoscaling around the shard count", (Consumer<PiKVCluster>) c -> {
                    c.getSpec().getAutoscaling().setEnabled(true);
                    c.getSpec().getAutoscaling().setMinShards(1);
                    c.getSpec().getAutoscaling().setMaxShards(8);
                }),
                Arguments.of("huge pages as a limit", (Consumer<PiKVCluster>) c -> c.getSpec().getSidecar()
                        .setResources(new ResourceRequirementsBuilder().addToLimits("hugepages-2Mi",
                                new Quantity("512Mi")).build())),
                Arguments.of("one shard per expert", (Consumer<PiKVCluster>) c -> c.getSpec().setShards(8)),
                Arguments.of("gpu with streaming and int8 pages", (Consumer<PiKVCluster>) c -> {
                    c.getSpec().getGpu().setEnabled(true);
                    c.getSpec().getScheduling().setPolicy(SchedulingPolicy.STREAMING);
                    c.getSpec().getCompression().setMethod("int8");
                }),
                // The CRD's default maxShards (8) on a smaller model, or any ceiling above the experts: one shard per
                // expert is the bound anyway.
                Arguments.of("memory request below the limit, above what a shard holds", (Consumer<PiKVCluster>) c ->
                        c.getSpec().getSidecar().setResources(new ResourceRequirementsBuilder()
                                .addToLimits("memory", new Quantity("4Gi"))
                                .addToRequests("memory", new Quantity("612Mi")).build())),
                Arguments.of("autoscaling ceiling above the experts", (Consumer<PiKVCluster>) c -> {
                    c.getSpec().getAutoscaling().setEnabled(true);
                    c.getSpec().getAutoscaling().setMaxShards(16);
                }),
                Arguments.of("gpu with utility by recency only", (Consumer<PiKVCluster>) c -> {
                    c.getSpec().getGpu().setEnabled(true);
                    c.getSpec().getScheduling().setPolicy(SchedulingPolicy.UTILITY);
                    c.getSpec().getScheduling().setParameters(Map.of("attention", 0.0, "frequency", 0.0,
                            "recency", 1.0));
                }));
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("valid")
    void accepts(String what, Consumer<PiKVCluster> change) {
        PiKVCluster c = TestClusters.small("demo", "ns");
        change.accept(c);
        assertThat(PiKVClusterValidator.validate(c).violations()).as(what).isEmpty();
    }

    @Test
    void reportsEveryViolationNotJustTheFirst() {
        PiKVCluster c = TestClusters.small("demo", "ns");
        c.getSpec().getModel().setTopK(9);
        c.getSpec().getRouting().setLambda(11.0);
        c.getSpec().getGpu().setPerShard(0);
        assertThat(PiKVClusterValidator.validate(c).violations()).extracting(PiKVClusterValidator.Violation::field)
                .containsExactlyInAnyOrder("spec.model.topK", "spec.routing.lambda", "spec.gpu.perShard");
    }

    @Test
    void violationsQuoteLongValuesCutAndSummariesListTheFirstSixteen() {
        // A huge invalid value is quoted cut, so status (which repeats it) stays far below an object's size limit.
        PiKVCluster c = TestClusters.small("demo", "ns");
        c.getSpec().getSidecar().setImage("Bad".repeat(200_000));
        PiKVClusterValidator.Violation v = PiKVClusterValidator.validate(c).violations().get(0);
        assertThat(v.field()).isEqualTo("spec.sidecar.image");
        assertThat(v.message()).startsWith("'BadBad").matches("(?s).{512}… \\(\\d{6} more characters\\)");
        List<io.fabric8.kubernetes.api.model.LocalObjectReference> secrets = new java.util.ArrayList<>();
        for (int i = 0; i < 20; i++) {
            secrets.add(new io.fabric8.kubernetes.api.model.LocalObjectReference("Bad" + i));
        }
        c.getSpec().getSidecar().setImage(null);
        c.getSpec().getSidecar().setImagePullSecrets(secrets);
        PiKVClusterValidator.Result many = PiKVClusterValidator.validate(c);
        assertThat(many.violations()).hasSize(20);
        assertThat(many.summary()).contains("imagePullSecrets[15].name").doesNotContain("imagePullSecrets[16]")
                .endsWith("; and 4 more violations");
    }

    @Test
    void policiesAreTheEngines() {
        assertThat(Arrays.stream(SchedulingPolicy.values()).map(SchedulingPolicy::value))
                .containsExactlyElementsOf(BlockPolicies.NAMES);
        assertThat(PiKVClusterValidator.POLICY_PARAMETERS.keySet()).containsExactlyInAnyOrder(SchedulingPolicy.values());
    }

    @Test
    void bootstrapServersTheSchemaAndTheValidatorAgree() throws Exception {
        // The API server checks the CRD's pattern before the operator sees the spec: the two must agree, or a user
        // meets a bare regular expression the docs never mention.
        String pattern = new com.fasterxml.jackson.databind.ObjectMapper(
                new com.fasterxml.jackson.dataformat.yaml.YAMLFactory()).readTree(new java.io.File(
                "../crds/pikvclusters.pikv.io-v1.yml")).at("/spec/versions/0/schema/openAPIV3Schema/properties/spec"
                + "/properties/kafka/properties/bootstrapServers/pattern").asText();
        assertThat(pattern).isNotEmpty();
        // servers, accepted by the schema, accepted by the validator (which also wants a port)
        Object[][] cases = {{"kafka:9092", true, true}, {"a:9092, b:9093", true, true},
            {" a:9092 ,b:9093 ", true, true},
            {"a:9092,,b:9093", false, false}, {"a:9092 b:9093", false, false}, {"a:9092,", false, false},
            {"broker", true, false}};
        for (Object[] t : cases) {
            String servers = (String) t[0];
            PiKVCluster c = TestClusters.small("demo", "ns");
            KafkaSpec k = new KafkaSpec();
            k.setBootstrapServers(servers);
            c.getSpec().setKafka(k);
            assertThat(java.util.regex.Pattern.compile(pattern).matcher(servers).find()).as("schema: '%s'", servers)
                    .isEqualTo(t[1]);
            assertThat(PiKVClusterValidator.validate(c).valid()).as("validator: '%s'", servers).isEqualTo(t[2]);
        }
    }

    @Test
    void modelBoundsAreTheEngines() {
        // The CRD (crds/ may not depend on the engine) repeats ModelShape's bounds; they must not drift apart.
        assertThat(ModelSpec.MAX_LAYERS).isEqualTo(ModelShape.MAX_LAYERS);
        assertThat(ModelSpec.MAX_HEADS).isEqualTo(ModelShape.MAX_HEADS);
        assertThat(ModelSpec.MAX_HEAD_DIM).isEqualTo(ModelShape.MAX_HEAD_DIM);
        assertThat(ModelSpec.MAX_EXPERTS).isEqualTo(ModelShape.MAX_EXPERTS);
    }
}
