package io.pikv.operator.controller;

import io.fabric8.kubernetes.api.model.Condition;
import io.fabric8.kubernetes.api.model.ConfigMap;
import io.fabric8.kubernetes.api.model.ObjectMetaBuilder;
import io.fabric8.kubernetes.api.model.apps.StatefulSet;
import io.fabric8.kubernetes.client.KubernetesClient;
import io.fabric8.kubernetes.client.KubernetesClientException;
import io.fabric8.kubernetes.client.dsl.base.PatchContext;
import io.fabric8.kubernetes.client.dsl.base.PatchType;
import io.javaoperatorsdk.operator.api.config.informer.Informer;
import io.javaoperatorsdk.operator.api.reconciler.Context;
import io.javaoperatorsdk.operator.api.reconciler.ControllerConfiguration;
import io.javaoperatorsdk.operator.api.reconciler.ErrorStatusUpdateControl;
import io.javaoperatorsdk.operator.api.reconciler.Reconciler;
import io.javaoperatorsdk.operator.api.reconciler.RetryInfo;
import io.javaoperatorsdk.operator.api.reconciler.UpdateControl;
import io.javaoperatorsdk.operator.api.reconciler.Workflow;
import io.javaoperatorsdk.operator.api.reconciler.dependent.Dependent;
import io.pikv.api.v1alpha1.Decision;
import io.pikv.api.v1alpha1.PiKVCluster;
import io.pikv.api.v1alpha1.PiKVClusterSpec;
import io.pikv.api.v1alpha1.PiKVClusterStatus;
import io.pikv.operator.config.OperatorConfig;
import io.pikv.operator.dependent.ShardConfigMapDependent;
import io.pikv.operator.dependent.ShardHeadlessServiceDependent;
import io.pikv.operator.dependent.ShardPodDisruptionBudgetDependent;
import io.pikv.operator.dependent.ShardStatefulSetDependent;
import io.pikv.operator.model.OperatorSettings;
import io.pikv.operator.model.PiKVClusterResources;
import io.pikv.operator.model.PiKVClusterValidator;
import io.pikv.operator.model.ShardCluster;
import io.pikv.operator.status.Conditions;
import io.pikv.operator.status.Reasons;
import io.pikv.operator.status.StatusAggregator;
import io.pikv.operator.status.StatusJson;
import org.jboss.logging.Logger;

import java.time.Duration;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;

/**
 * Reconciles a PiKVCluster into its shards: observe, validate, build the desired objects, apply them, patch the
 * status when it changed, and come back later. It reconciles the whole state every time, whatever woke it.
 *
 * <p>An invalid spec is never applied: the cluster gets {@code Degraded=True} and a Warning event, and the dependents
 * are reconciled from the last valid spec, which status keeps as JSON ({@code status.lastValidSpec}) so that it
 * survives operator restarts. The dependents run only when this reconciler invokes them (explicit workflow), after
 * the spec that drives them has been chosen.
 *
 * <p>The primary informer does not compare resource versions: with that comparison (the SDK's default) a spec change
 * that lands while a reconcile is patching status was dropped as older than the status patch's answer, and waited
 * for the next resync (seen as a lost update in {@code ./pikv bench operator} about one run in two).
 */
@ControllerConfiguration(name = PiKVClusterReconciler.NAME, informer = @Informer(comparableResourceVersions = false))
@Workflow(explicitInvocation = true, dependents = {
    @Dependent(name = "config", type = ShardConfigMapDependent.class),
    @Dependent(name = "service", type = ShardHeadlessServiceDependent.class),
    @Dependent(name = "pdb", type = ShardPodDisruptionBudgetDependent.class),
    @Dependent(name = "shards", type = ShardStatefulSetDependent.class, dependsOn = {"config", "service", "pdb"})})
public class PiKVClusterReconciler implements Reconciler<PiKVCluster> {
    private static final Logger LOG = Logger.getLogger(PiKVClusterReconciler.class);
    public static final String NAME = "pikvcluster";

    private final OperatorSettings settings;
    private final OperatorConfig config;
    private final EventRecorder events;
    private final ReconcileMetrics metrics;
    private final WrittenStatuses written;

    @jakarta.inject.Inject
    public PiKVClusterReconciler(OperatorSettings settings, OperatorConfig config, EventRecorder events,
                                 ReconcileMetrics metrics, WrittenStatuses written) {
        this.settings = settings;
        this.config = config;
        this.events = events;
        this.metrics = metrics;
        this.written = written;
    }

    /** With statuses of its own (no {@link SdkMetrics} to forget deleted clusters: the bench's operator). */
    public PiKVClusterReconciler(OperatorSettings settings, OperatorConfig config, EventRecorder events,
                                 ReconcileMetrics metrics) {
        this(settings, config, events, metrics, new WrittenStatuses());
    }

    @Override
    public UpdateControl<PiKVCluster> reconcile(PiKVCluster cluster, Context<PiKVCluster> context) {
        ReconcileMetrics.Reconcile timing = metrics.start(cluster.getMetadata().getNamespace(),
                cluster.getMetadata().getName());
        try {
            Outcome outcome = reconcileCluster(cluster, context);
            metrics.finished(timing, outcome.result);
            return outcome.control;
        } catch (RuntimeException e) {
            metrics.failed(timing);
            throw e;
        }
    }

    /**
     * What a reconcile did: its control, and its result for the metrics ({@code applied}, {@code invalid},
     * {@code blocked}, {@code relabelled}).
     */
    private record Outcome(UpdateControl<PiKVCluster> control, String result) {
    }

    private Outcome reconcileCluster(PiKVCluster cluster, Context<PiKVCluster> context) {
        String now = Instant.now().truncatedTo(ChronoUnit.SECONDS).toString();
        long generation = generation(cluster);
        PiKVClusterStatus known = statusOf(cluster);
        PiKVClusterStatus previous = known == null ? new PiKVClusterStatus() : known;

        // 1. Validate, and choose the spec to run: the current one when valid, else the last valid one.
        PiKVClusterValidator.Result validation = PiKVClusterValidator.validate(cluster);
        PiKVClusterSpec runningSpec;
        long runningGeneration;
        ConfigMap current = own(cluster, context, ConfigMap.class);
        if (validation.valid()) {
            runningSpec = cluster.getSpec();
            runningGeneration = generation;
        } else {
            runningSpec = StatusJson.read(previous.getLastValidSpec(), PiKVClusterSpec.class);
            runningGeneration = previous.getLastValidGeneration() == null ? -1 : previous.getLastValidGeneration();
            // The StatefulSet may have been applied from a later valid generation whose status write then failed: that
            // one is what the shards run, and what keeps running (not the older one status names). Its annotation
            // says which (written with the StatefulSet, so a generation whose StatefulSet was refused is not named),
            // taken only when it renders exactly the StatefulSet that runs (its config hash): an annotation edited by
            // hand is no evidence of what the shards run.
            ShardCluster.Rendered rendered = ShardCluster.rendered(
                    own(cluster, context, StatefulSet.class));
            if (rendered != null && rendered.generation() > runningGeneration && rendered.generation() < generation) {
                PiKVClusterSpec applied = StatusJson.read(rendered.specJson(), PiKVClusterSpec.class);
                if (applied != null && rendersTheRunningShards(cluster, applied, current, context)) {
                    runningSpec = applied;
                    runningGeneration = rendered.generation();
                }
            }
        }
        // A last valid spec is checked again: one an older operator version accepted may fail this version's rules
        // (an upgrade), and rendering it could roll the shards into settings they refuse. Its shards are left alone.
        String lastValidRefused = null;
        if (!validation.valid() && runningSpec != null) {
            PiKVClusterValidator.Result again = validateAs(cluster, runningSpec);
            if (!again.valid()) {
                lastValidRefused = again.summary();
                runningSpec = null;
            }
        }

        // 2. Build the desired state and apply it through the dependents.
        ShardCluster running = null;
        if (runningSpec != null) {
            // An epoch no operator could have reached (status edited by hand) is no evidence: the next one would overflow.
            Long inStatus = previous.getShardMapEpoch();
            long knownEpoch = inStatus == null || inStatus < 0 || inStatus >= ShardCluster.MAX_EPOCH ? -1 : inStatus;
            running = ShardCluster.fromCrd(cluster, runningSpec, ShardCluster.readControlState(current), knownEpoch,
                    settings).renderedFrom(runningGeneration, StatusJson.write(runningSpec));
            // An object of one of the cluster's names that is not the cluster's: applying over it would fail (409)
            // on every retry without saying why, and taking it over could break what it belongs to.
            Claim claim = claimNames(cluster, context);
            if (claim.taken() != null) {
                return nameTaken(cluster, context, known, claim.taken(), generation, now);
            }
            if (claim.relabelled()) {
                // Not applied now: the informers have not seen it yet, so the workflow would create it again and be
                // refused (409). Labelled, it is an event for them, which reconciles the cluster again.
                return new Outcome(UpdateControl.<PiKVCluster>noUpdate().rescheduleAfter(RELABEL_RETRY), "relabelled");
            }
            context.managedWorkflowAndDependentResourceContext().put(ShardCluster.CONTEXT_KEY, running);
            context.managedWorkflowAndDependentResourceContext().reconcileManagedWorkflow();
        }

        // 3. Decide what to tell: an event for every decision (after the status write), the last one into status.
        List<Decision> decisions = decisions(cluster, previous, validation, running, runningGeneration,
                generation, now, lastValidRefused);

        // 4. Aggregate the status; patch it only when it changed.
        // Read even without a spec to run: shards left running unmanaged are still counted.
        StatefulSet sts = own(cluster, context, StatefulSet.class);
        PiKVClusterStatus next = StatusAggregator.next(previous, new StatusAggregator.Snapshot(
                cluster.getMetadata().getName(), generation, validation, running, runningGeneration,
                running == null ? null : StatusJson.write(runningSpec), sts, decisions, now, lastValidRefused),
                config.progressDeadline());
        Duration after = Conditions.isTrue(next.getConditions(), PiKVClusterStatus.READY) || running == null
                ? config.resyncInterval() : config.progressInterval();
        if (StatusAggregator.changed(known, next)) {
            writeStatus(cluster, next, context);
        }
        // After the status that reports them: a reconcile retried after a failed write decides again from the status
        // it knows (statusOf), so nothing is told twice.
        for (Decision d : decisions) {
            events.record(cluster, Reasons.SPEC_REJECTED.equals(d.getReason()) ? EventRecorder.WARNING
                    : EventRecorder.NORMAL, d.getReason(), d.getMessage());
        }
        Condition degraded = Conditions.find(next.getConditions(), PiKVClusterStatus.DEGRADED);
        Condition wasDegraded = Conditions.find(previous.getConditions(), PiKVClusterStatus.DEGRADED);
        Condition wasStalled = Conditions.find(previous.getConditions(), PiKVClusterStatus.STALLED);
        if (degraded != null && Reasons.PROGRESS_DEADLINE_EXCEEDED.equals(degraded.getReason())
                && (wasDegraded == null || !Reasons.PROGRESS_DEADLINE_EXCEEDED.equals(wasDegraded.getReason()))
                // a failed reconcile in between changes Degraded's reason but leaves this stall: told already
                && !(wasStalled != null && Conditions.TRUE.equals(wasStalled.getStatus())
                && Reasons.PROGRESS_DEADLINE_EXCEEDED.equals(wasStalled.getReason()))) {
            events.warning(cluster, Reasons.PROGRESS_DEADLINE_EXCEEDED, degraded.getMessage());
        }
        return new Outcome(UpdateControl.<PiKVCluster>noUpdate().rescheduleAfter(after),
                validation.valid() ? "applied" : "invalid");
    }

    /**
     * Writes the whole status in one request: a JSON Patch that sets {@code /status} (the reconciler owns all of it,
     * so neither a read first nor a resource version is needed, with or without server-side apply), and remembers it
     * until the informer brings it back ({@link WrittenStatuses}).
     */
    private void writeStatus(PiKVCluster cluster, PiKVClusterStatus status, Context<PiKVCluster> context) {
        KubernetesClient client = context.getClient();
        // Addressed by name, so the patch first tests the uid: a reconcile of a cluster deleted and created again
        // under the same name (kubectl replace --force) must not write the old object's status into the new one.
        String uid = cluster.getMetadata().getUid();
        String test = uid == null ? "" : "{\"op\":\"test\",\"path\":\"/metadata/uid\",\"value\":"
                + client.getKubernetesSerialization().asJson(uid) + "},";
        String patch = "[" + test + "{\"op\":\"add\",\"path\":\"/status\",\"value\":"
                + client.getKubernetesSerialization().asJson(status) + "}]";
        PiKVCluster patched = client.resource(addressOf(cluster)).subresource("status")
                .patch(PatchContext.of(PatchType.JSON), patch);
        written.remember(cluster, status, patched == null ? null : patched.getMetadata().getResourceVersion());
    }

    /**
     * Checks each object the cluster renders. One its informers hold (they see only objects labelled {@link
     * PiKVClusterResources#MANAGED_SELECTOR}, matched to a cluster by the owner reference's name) is its own unless
     * that reference is to another cluster of this name (deleted: its uid differs). One they do not hold is looked up:
     * one the cluster owns whose label was removed is labelled again (the informers then see it, and the next
     * reconcile brings it back to its desired state); one it does not own is said, in a sentence for status.
     */
    private Claim claimNames(PiKVCluster cluster, Context<PiKVCluster> context) {
        String name = cluster.getMetadata().getName();
        List<String> foreign = new ArrayList<>();
        boolean relabelled = claim(cluster, context, ConfigMap.class, PiKVClusterResources.configMapName(name), foreign);
        relabelled |= claim(cluster, context, io.fabric8.kubernetes.api.model.Service.class,
                PiKVClusterResources.headlessServiceName(name), foreign);
        relabelled |= claim(cluster, context, StatefulSet.class, PiKVClusterResources.shardStatefulSetName(name),
                foreign);
        relabelled |= claim(cluster, context, io.fabric8.kubernetes.api.model.policy.v1.PodDisruptionBudget.class,
                PiKVClusterResources.podDisruptionBudgetName(name), foreign);
        if (foreign.isEmpty()) {
            return new Claim(null, relabelled);
        }
        return new Claim(String.join("; ", foreign) + ": delete or rename " + (foreign.size() == 1 ? "it" : "them")
                + ", or give the cluster another name. Nothing of the cluster is created or changed until then "
                + "(looked at again every " + config.progressInterval().toString().substring(2)
                .toLowerCase(java.util.Locale.ROOT) + ").", relabelled);
    }

    /**
     * What {@link #claimNames} found: a sentence naming the objects that are not the cluster's (null: none), and
     * whether one of its own was labelled again.
     */
    private record Claim(String taken, boolean relabelled) {
    }

    /**
     * Checks one name (see {@link #claimNames}); true when the object is the cluster's but its informer does not hold
     * it yet (it was labelled again now, or before and the informer has not seen it since).
     */
    private <T extends io.fabric8.kubernetes.api.model.HasMetadata> boolean claim(
            PiKVCluster cluster, Context<PiKVCluster> context, Class<T> kind, String objectName, List<String> foreign) {
        String namespace = cluster.getMetadata().getNamespace();
        String uid = cluster.getMetadata().getUid();
        T held = context.getSecondaryResource(kind).orElse(null);
        if (held != null && !ownedBy(held, uid)) {
            // Matched by the owner reference's name: a cluster deleted and created again under the same name finds the
            // old one's objects here until the garbage collector removes them. Applying over them would take them
            // over (the old pods, the old control state) and report them as created.
            String previousOwner = ownerOfAnother(held, cluster);
            if (previousOwner != null) {
                foreign.add(notOurs(kind, namespace, objectName, ofDeleted(previousOwner)));
            }
            return false;
        }
        if (held != null) {
            return false; // this cluster's (an owner reference of the old one beside it is the garbage collector's)
        }
        T found = context.getClient().resources(kind).inNamespace(namespace).withName(objectName).get();
        if (found == null) {
            return false;
        }
        java.util.Map<String, String> labels = found.getMetadata().getLabels();
        boolean labelled = labels != null && PiKVClusterResources.MANAGED_BY.equals(
                labels.get(PiKVClusterResources.LABEL_MANAGED_BY));
        boolean owned = ownedBy(found, uid);
        if (owned && labelled) {
            // Labelled (again) but not seen by the informers yet: applied now, it would be created again and refused
            // (409). Looked at again once they hold it.
            return true;
        }
        if (owned && !labelled) {
            context.getClient().resources(kind).inNamespace(namespace).withName(objectName).edit(o -> {
                if (o.getMetadata().getLabels() == null) {
                    o.getMetadata().setLabels(new java.util.HashMap<>());
                }
                o.getMetadata().getLabels().put(PiKVClusterResources.LABEL_MANAGED_BY, PiKVClusterResources.MANAGED_BY);
                return o;
            });
            LOG.infof("%s/%s: %s %s had lost its label %s; labelled again", namespace, cluster.getMetadata().getName(),
                    kind.getSimpleName(), objectName, PiKVClusterResources.MANAGED_SELECTOR);
            return true;
        }
        if (!owned) {
            String previousOwner = ownerOfAnother(found, cluster);
            foreign.add(notOurs(kind, namespace, objectName, previousOwner != null ? ofDeleted(previousOwner)
                    : labelled ? "labelled " + PiKVClusterResources.MANAGED_SELECTOR + " but owned by no PiKVCluster, "
                    + "as a cluster deleted with --cascade=orphan leaves it; the garbage collector will not remove it"
                    : "no label " + PiKVClusterResources.MANAGED_SELECTOR + ", no owner reference to this PiKVCluster"));
        }
        return false;
    }

    /** The sentence for status naming an object of the cluster's names that is not its own, and why. */
    private static String notOurs(Class<?> kind, String namespace, String objectName, String why) {
        return kind.getSimpleName() + " " + namespace + "/" + objectName + " already exists and is not this cluster's ("
                + why + ")";
    }

    private static String ofDeleted(String uid) {
        return "it belongs to a deleted PiKVCluster of this name, uid " + uid + ": it goes once the garbage collector "
                + "removes it";
    }

    /**
     * The cluster's object of {@code kind} its informer holds, or null. The informers match objects to a cluster by
     * the owner reference's name, so a cluster deleted and created again under the same name would otherwise read the
     * old one's objects (its shards' counts, its control state) as its own until the garbage collector removes them.
     */
    private static <T extends io.fabric8.kubernetes.api.model.HasMetadata> T own(PiKVCluster cluster,
                                                                                 Context<PiKVCluster> context,
                                                                                 Class<T> kind) {
        T held = context.getSecondaryResource(kind).orElse(null);
        return held != null && ownedBy(held, cluster.getMetadata().getUid()) ? held : null;
    }

    private static boolean ownedBy(io.fabric8.kubernetes.api.model.HasMetadata object, String uid) {
        return uid != null && object.getMetadata().getOwnerReferences() != null
                && object.getMetadata().getOwnerReferences().stream().anyMatch(o -> uid.equals(o.getUid()));
    }

    /**
     * The uid of a PiKVCluster of this cluster's name (not this one: another uid) that owns {@code object}; null when
     * none does, or when this cluster's uid is unknown.
     */
    private static String ownerOfAnother(io.fabric8.kubernetes.api.model.HasMetadata object, PiKVCluster cluster) {
        String uid = cluster.getMetadata().getUid();
        if (uid == null || object.getMetadata().getOwnerReferences() == null) {
            return null;
        }
        return object.getMetadata().getOwnerReferences().stream()
                .filter(o -> "PiKVCluster".equals(o.getKind()) && cluster.getMetadata().getName().equals(o.getName())
                        && o.getUid() != null && !uid.equals(o.getUid()))
                .map(io.fabric8.kubernetes.api.model.OwnerReference::getUid).findFirst().orElse(null);
    }

    /** The status and event of a reconcile stopped by objects of the cluster's names that are not its own. */
    private Outcome nameTaken(PiKVCluster cluster, Context<PiKVCluster> context, PiKVClusterStatus known,
                              String message, long generation, String now) {
        PiKVClusterStatus next = known == null ? new PiKVClusterStatus()
                : context.getClient().getKubernetesSerialization().clone(known);
        StatusAggregator.refreshShards(next, own(cluster, context, StatefulSet.class), now);
        // Told already when Degraded says it, or Stalled does (a failed reconcile in between moved Degraded to
        // ReconcileFailed and left Stalled as it was).
        boolean told = Conditions.is(next.getConditions(), PiKVClusterStatus.DEGRADED, true, Reasons.NAME_TAKEN,
                message) || Conditions.is(next.getConditions(), PiKVClusterStatus.STALLED, true, Reasons.NAME_TAKEN,
                message);
        StatusAggregator.nameTaken(next, message, generation, now);
        if (known == null || StatusAggregator.changed(known, next)) {
            writeStatus(cluster, next, context);
        }
        // Warned once, as the event is: the reconcile comes back every progress interval while the name is taken.
        if (!told) {
            events.warning(cluster, Reasons.NAME_TAKEN, message);
            LOG.warnf("%s/%s: %s", cluster.getMetadata().getNamespace(), cluster.getMetadata().getName(), message);
        } else {
            LOG.debugf("%s/%s: still blocked: %s", cluster.getMetadata().getNamespace(), cluster.getMetadata().getName(),
                    message);
        }
        return new Outcome(UpdateControl.<PiKVCluster>noUpdate().rescheduleAfter(config.progressInterval()),
                "blocked");
    }

    /** {@code spec} checked by this version's rules as the spec of {@code cluster} (a saved one, not the current). */
    private static PiKVClusterValidator.Result validateAs(PiKVCluster cluster, PiKVClusterSpec spec) {
        PiKVCluster candidate = new PiKVCluster();
        candidate.setMetadata(cluster.getMetadata());
        candidate.setSpec(spec);
        return PiKVClusterValidator.validate(candidate);
    }

    /** Whether {@code spec}, valid now, renders the config hash of the StatefulSet the cluster runs. */
    private boolean rendersTheRunningShards(PiKVCluster cluster, PiKVClusterSpec spec, ConfigMap current,
                                            Context<PiKVCluster> context) {
        StatefulSet sts = own(cluster, context, StatefulSet.class);
        java.util.Map<String, String> annotations = sts == null || sts.getSpec() == null
                || sts.getSpec().getTemplate() == null || sts.getSpec().getTemplate().getMetadata() == null ? null
                : sts.getSpec().getTemplate().getMetadata().getAnnotations();
        String running = annotations == null ? null : annotations.get(PiKVClusterResources.ANNOTATION_CONFIG_HASH);
        if (running == null) {
            return false;
        }
        if (!validateAs(cluster, spec).valid()) {
            return false;
        }
        try {
            return running.equals(ShardCluster.fromCrd(cluster, spec, ShardCluster.readControlState(current), -1,
                    settings).configHash());
        } catch (RuntimeException e) {
            return false;
        }
    }

    /** The cluster's status as this operator last knew it ({@link WrittenStatuses#current}); null when none. */
    PiKVClusterStatus statusOf(PiKVCluster cluster) {
        return written.current(cluster);
    }

    /** Only what addresses {@code cluster}: the client copies the object it patches, and the patch needs no more. */
    private static PiKVCluster addressOf(PiKVCluster cluster) {
        PiKVCluster address = new PiKVCluster();
        address.setMetadata(new ObjectMetaBuilder().withName(cluster.getMetadata().getName())
                .withNamespace(cluster.getMetadata().getNamespace()).build());
        return address;
    }

    /** The decisions this reconcile takes, each recorded as an Event (once: status remembers what was applied). */
    private List<Decision> decisions(PiKVCluster cluster, PiKVClusterStatus previous,
                                     PiKVClusterValidator.Result validation, ShardCluster running,
                                     long runningGeneration, long generation, String now,
                                     String lastValidRefused) {
        List<Decision> out = new ArrayList<>();
        if (!validation.valid()) {
            // A later valid generation the shards were found to run (its status write lost) is applied as far as
            // status goes by this reconcile: its decisions are told first, as when it was applied.
            long known = previous.getLastValidGeneration() == null ? -1 : previous.getLastValidGeneration();
            if (running != null && runningGeneration > known) {
                out.addAll(applied(cluster, previous, running, runningGeneration, now));
            } else if (running != null && runningGeneration == known) {
                controlStateRestored(cluster, previous, running, now, out); // the running spec's ConfigMap lost
            }
            String message = StatusAggregator.invalidMessage(generation, validation, running != null,
                    runningGeneration, previous, lastValidRefused);
            // Once per distinct verdict: after the first time the Degraded condition carries the same text, or — when
            // a failed reconcile has put its own reason there since — the last decision does.
            Decision last = previous.getLastDecision();
            boolean told = Conditions.is(previous.getConditions(), PiKVClusterStatus.DEGRADED, true,
                    Reasons.SPEC_INVALID, message) || last != null && Reasons.SPEC_REJECTED.equals(last.getReason())
                    && message.equals(last.getMessage());
            if (!told) {
                out.add(new Decision(now, Reasons.SPEC_REJECTED, message));
            }
            return out;
        }
        if (Objects.equals(previous.getLastValidGeneration(), generation)) {
            if (running != null) {
                controlStateRestored(cluster, previous, running, now, out);
            }
            return out;
        }
        return applied(cluster, previous, running, generation, now);
    }

    /**
     * The spec already applied, yet another control state: the ConfigMap that keeps it was deleted or edited by hand,
     * and holds the state for the spec anew under a higher epoch (told whether the current spec is valid or not).
     */
    private void controlStateRestored(PiKVCluster cluster, PiKVClusterStatus previous, ShardCluster running,
                                      String now, List<Decision> out) {
        if (previous.getShardMapEpoch() != null && previous.getShardMapEpoch() != running.shardMap().epoch()) {
            out.add(decide(cluster, Reasons.REBALANCED, "Control state epoch " + previous.getShardMapEpoch()
                    + " → " + running.shardMap().epoch() + " with the spec unchanged: ConfigMap "
                    + io.pikv.operator.model.PiKVClusterResources.configMapName(cluster.getMetadata().getName())
                    + " did not hold the control state status recorded (deleted, or edited by hand), so it holds "
                    + "this one now: " + running.shardMap().experts() + " experts over " + running.shards()
                    + " shards, policy " + running.activePolicy().value() + ", " + running.budgetBytes()
                    + " bytes per shard (not yet published to them).", now));
        }
    }

    /** The decisions of applying {@code generation} (valid, rendered as {@code running}) after {@code previous}. */
    private List<Decision> applied(PiKVCluster cluster, PiKVClusterStatus previous, ShardCluster running,
                                   long generation, String now) {
        List<Decision> out = new ArrayList<>();
        if (previous.getLastValidGeneration() == null) {
            String message = "Created " + running.shards() + " shards for a model of " + running.spec().getModel()
                    .getLayers() + " layers and " + running.spec().getModel().getExperts() + " experts, "
                    + running.budgetBytes() + " bytes each, policy " + running.activePolicy().value()
                    + ", shard map epoch " + running.shardMap().epoch() + ", config " + running.configHash() + ".";
            out.add(decide(cluster, Reasons.SPEC_APPLIED, message, now));
            return out;
        }
        if (!Objects.equals(previous.getDesiredShards(), running.shards())) {
            out.add(decide(cluster, Reasons.SCALED, "Shards " + previous.getDesiredShards() + " → " + running.shards()
                    + " (generation " + generation + ").", now));
        }
        if (previous.getShardMapEpoch() != null && previous.getShardMapEpoch() != running.shardMap().epoch()) {
            out.add(decide(cluster, Reasons.REBALANCED, "Control state epoch " + previous.getShardMapEpoch() + " → "
                    + running.shardMap().epoch() + ": " + running.shardMap().experts() + " experts over "
                    + running.shards() + " shards, policy " + running.activePolicy().value() + ", "
                    + running.budgetBytes() + " bytes per shard (not yet published to them).", now));
        }
        if (!Objects.equals(previous.getConfigHash(), running.configHash())) {
            out.add(decide(cluster, Reasons.CONFIG_CHANGED, "Config " + previous.getConfigHash() + " → "
                    + running.configHash() + " (generation " + generation + "): rolling the shard pods.", now));
        }
        if (out.isEmpty()) {
            out.add(decide(cluster, Reasons.SPEC_APPLIED, "Applied generation " + generation
                    + "; the shard pods' settings are unchanged, so they keep running.", now));
        }
        return out;
    }

    private Decision decide(PiKVCluster cluster, String reason, String message, String now) {
        LOG.infof("%s/%s: %s", cluster.getMetadata().getNamespace(), cluster.getMetadata().getName(), message);
        return new Decision(now, reason, message);
    }

    @Override
    public ErrorStatusUpdateControl<PiKVCluster> updateErrorStatus(PiKVCluster cluster, Context<PiKVCluster> context,
                                                                   Exception e) {
        // Past the last retry the SDK would wait for the next event (or its 10-hour maximum interval): then this
        // control asks for the progress interval instead, which starts a new round of retries, so a cluster whose API
        // calls failed for a while recovers. The message is the same either way (no status write or event per round).
        boolean lastAttempt = context.getRetryInfo().map(RetryInfo::isLastAttempt).orElse(false);
        String message = "Reconcile failed (retrying with backoff): " + rootMessage(e);
        PiKVClusterValidator.Result validation = PiKVClusterValidator.validate(cluster);
        if (!validation.valid()) {
            // The failure was applying the last valid spec; the spec written last must still say what is wrong with it.
            message += "; besides, generation " + generation(cluster) + " is invalid and not applied: "
                    + validation.summary();
        }
        ErrorStatusUpdateControl<PiKVCluster> after = lastAttempt
                ? ErrorStatusUpdateControl.<PiKVCluster>noStatusUpdate().withNoRetry()
                .rescheduleAfter(config.progressInterval())
                : ErrorStatusUpdateControl.noStatusUpdate();
        PiKVClusterStatus current = statusOf(cluster);
        PiKVClusterStatus status = current == null ? new PiKVClusterStatus()
                : context.getClient().getKubernetesSerialization().clone(current); // the remembered one stays as written
        String now = Instant.now().truncatedTo(ChronoUnit.SECONDS).toString();
        // The failed reconcile built no status: the shards' counts and readiness still follow the StatefulSet.
        StatusAggregator.refreshShards(status, own(cluster, context, StatefulSet.class), now);
        // Told for this generation: the same failure of a newer generation still moves the conditions' generation.
        io.fabric8.kubernetes.api.model.Condition degraded = Conditions.find(status.getConditions(),
                PiKVClusterStatus.DEGRADED);
        boolean told = Conditions.is(status.getConditions(), PiKVClusterStatus.DEGRADED, true,
                Reasons.RECONCILE_FAILED, message)
                && Long.valueOf(generation(cluster)).equals(degraded.getObservedGeneration());
        if (told) {
            if (current != null && StatusAggregator.changed(current, status)) {
                writeStatusQuietly(cluster, status, context);
            }
            return after;
        }
        status.setConditions(Conditions.set(status.getConditions(), PiKVClusterStatus.DEGRADED, true,
                Reasons.RECONCILE_FAILED, message, generation(cluster), now));
        // A stall over an invalid spec that is valid now (the failure is applying the fix) waits for no person any
        // more: the operator retries it.
        io.fabric8.kubernetes.api.model.Condition stall = Conditions.find(status.getConditions(),
                PiKVClusterStatus.STALLED);
        if (validation.valid() && stall != null && Conditions.TRUE.equals(stall.getStatus())
                && Reasons.SPEC_INVALID.equals(stall.getReason())) {
            status.setConditions(Conditions.set(status.getConditions(), PiKVClusterStatus.STALLED, false,
                    Reasons.NOT_STALLED, "Nothing waits for a person.", generation(cluster), now));
        }
        // For kstatus tools the operator is still at work (it retries), unless the cluster already waits for a
        // person (Stalled, set by the last reconcile that got through).
        if (!Conditions.isTrue(status.getConditions(), PiKVClusterStatus.STALLED)) {
            status.setConditions(Conditions.set(status.getConditions(), PiKVClusterStatus.RECONCILING, true,
                    Reasons.RECONCILE_FAILED, message, generation(cluster), now));
        }
        // The same one-request write as a reconcile's, then the event — also when the write fails for another reason
        // than the cluster being gone or replaced, so that the failure is told somewhere (a repeat is counted on the
        // same event); the SDK retries with backoff either way.
        if (writeStatusQuietly(cluster, status, context)) {
            events.warning(cluster, Reasons.RECONCILE_FAILED, message);
        }
        return after;
    }

    /**
     * {@link #writeStatus}, logging a failure; false when the cluster is gone or is another object under its name (the
     * patch's uid test failed), where nothing more should be said about it.
     */
    private boolean writeStatusQuietly(PiKVCluster cluster, PiKVClusterStatus status, Context<PiKVCluster> context) {
        try {
            writeStatus(cluster, status, context);
            return true;
        } catch (KubernetesClientException failure) {
            LOG.warnf("%s/%s: could not write the status of a failed reconcile: %s",
                    cluster.getMetadata().getNamespace(), cluster.getMetadata().getName(), failure.getMessage());
            return stillThere(cluster, context);
        }
    }

    /** Whether the API server still holds this cluster (same uid); true when it cannot tell. */
    private static boolean stillThere(PiKVCluster cluster, Context<PiKVCluster> context) {
        try {
            PiKVCluster now = context.getClient().resources(PiKVCluster.class)
                    .inNamespace(cluster.getMetadata().getNamespace()).withName(cluster.getMetadata().getName()).get();
            return now != null && Objects.equals(now.getMetadata().getUid(), cluster.getMetadata().getUid());
        } catch (KubernetesClientException e) {
            return true;
        }
    }

    /** Longest failure message put into a condition and an event. */
    static final int MAX_FAILURE_MESSAGE = 600;

    /** When a cluster one of whose objects was labelled again is looked at again, if no event comes first. */
    static final Duration RELABEL_RETRY = Duration.ofSeconds(2);

    /**
     * What failed, in words: the root cause's message; for failed dependents (the SDK's aggregated exception, whose own
     * message prints every stack trace) each dependent's name and its API server answer. Cut to
     * {@link #MAX_FAILURE_MESSAGE} characters.
     */
    static String rootMessage(Throwable e) {
        String text;
        Throwable t = e;
        while (!(t instanceof io.javaoperatorsdk.operator.AggregatedOperatorException) && t.getCause() != null
                && t.getCause() != t) {
            t = t.getCause();
        }
        if (t instanceof io.javaoperatorsdk.operator.AggregatedOperatorException aggregated
                && !aggregated.getAggregatedExceptions().isEmpty()) {
            text = aggregated.getAggregatedExceptions().entrySet().stream()
                    .sorted(java.util.Map.Entry.comparingByKey())
                    .map(f -> shortName(f.getKey()) + ": " + rootMessage(f.getValue()))
                    .collect(java.util.stream.Collectors.joining("; "));
        } else if (t instanceof KubernetesClientException k && k.getStatus() != null
                && k.getStatus().getMessage() != null) {
            text = k.getCode() + " " + k.getStatus().getMessage();
        } else {
            text = t.getMessage() == null ? t.getClass().getSimpleName() : t.getMessage();
        }
        return text.length() <= MAX_FAILURE_MESSAGE ? text : text.substring(0, MAX_FAILURE_MESSAGE) + "…";
    }

    /** A dependent's name without its package (the SDK names them by class). */
    private static String shortName(String dependent) {
        int dot = dependent.lastIndexOf('.');
        return dot < 0 ? dependent : dependent.substring(dot + 1);
    }

    private static long generation(PiKVCluster cluster) {
        return cluster.getMetadata().getGeneration() == null ? 0 : cluster.getMetadata().getGeneration();
    }
}
