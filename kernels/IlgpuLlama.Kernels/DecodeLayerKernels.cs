namespace IlgpuLlama.Kernels;

// One decoder layer of a decode step as one persistent launch (issue 20): the five launches of the
// fused-norm step (q/k/v + RoPE + KV append, attention, o-projection, gate/up + SwiGLU, down)
// become tasks of one kernel, so a layer pays one launch's ramp-up and tail instead of five.
//
// Task list (per launch, built from the shapes; nothing is stored): tickets 0..total-1 in stage
// order, each stage's tasks being exactly the groups of that stage's own kernel:
//
//   ticket:  0 ........ Q-1 | Q ...... Q+A-1 | ... +O-1 | ...... +G-1 | ...... +D-1 | >= total: exit
//   stage:   0 qkv pairs    | 1 attention    | 2 o rows | 3 gate/up   | 4 down rows |
//   waits:   -              | done[0] == Q   | done[1]  | done[2]     | done[3]     |
//
// Q = (q_dim + 2 kv_dim) / 2 rotate_half pairs, A = rows x kv_heads x splits attention blocks (the
// last split to finish merges, as in the attention kernel), O = D = hidden / 2 row pairs (residual
// added in the epilogue), G = intermediate rows. RMSNorms stay fused into their consumers (q/k/v and
// gate/up sum x^2 in their pass over x). Each task runs the same device function as the
// per-operation kernel's group (MatVecQkvRopeTile, AttentionBlock, MatVecTile, MatVecSwiGluTile),
// so with equal group sizes the results are bit-identical to the fused-norm step.
//
// Waiting rule: a group takes the next ticket from one atomic counter; a stage-s task waits (thread 0
// spinning on an atomic read, never a cached load) until done[s-1] counts every task of stage s-1,
// then works, fences (device level) and adds one to done[s]. Stage s-1 completing implies every
// earlier stage completed (each of its tasks waited for the stage before), which is all a task
// reads: q/k/v wait for nothing inside the layer (the previous layer's launch has finished).
//
// Why it cannot deadlock, whatever the number of resident groups: tickets are taken in increasing
// order, and a task only waits for tasks of earlier stages, which hold smaller tickets; every
// smaller ticket was taken by a group that is running (a group takes a ticket only while resident
// and keeps it until the task is done), so the task with the smallest unfinished ticket never waits
// and always progresses. With one group (or groups run one after another, as ILGPU's CPU
// accelerator does per multiprocessor) group 0 takes every task in order and never waits on an
// unfinished one. A group that draws a ticket >= total leaves; the last group to leave (an atomic
// count of leavers) zeroes the counters for the next launch, so nothing is reset from the host.
//
// Launch: grid = persistent groups (KernelTuning.PersistentGroups: the multiprocessors x groups that
// fit, or a test's choice), group = the attention group size (any group size is valid for every
// task), dynamic shared memory = the attention kernel's.

/// <summary>Arguments of <see cref="DecodeLayerKernels.DecodeLayer{TW, TB}"/>: each stage's own kernel arguments, and the layer's task counters.</summary>
public struct DecodeLayerArgs
{
    public QkvRopeArgs Qkv;            // stage 0, input norm fused
    public AttentionArgs Attention;    // stage 1
    public MatVecArgs O;               // stage 2, residual accumulate
    public MatVecSwiGluArgs GateUp;    // stage 3, post-attention norm fused
    public MatVecArgs Down;            // stage 4, residual accumulate
    public ArrayView<int> Sync;        // [SyncInts] ticket, leavers, done per stage; zero between launches
    public LayerTasks Tasks;
}

/// <summary>
/// The task list of one layer launch: tasks per stage, in ticket order (see the DecodeLayerKernels
/// file header). The kernel and the host (tests, docs) read tickets through the same members.
/// </summary>
public struct LayerTasks
{
    /// <summary>Tasks of stages 0..4: q/k/v pairs, attention blocks, o row pairs, gate/up rows, down row pairs.</summary>
    public int Qkv, Attention, O, GateUp, Down;

    /// <summary>Every task of the launch; tickets from here on tell a group to leave.</summary>
    public readonly int Total => Qkv + Attention + O + GateUp + Down;

    /// <summary>The stage (0..4) of ticket <paramref name="t"/> (below <see cref="Total"/>).</summary>
    public readonly int Stage(int t) => t < Qkv ? 0 : t < Qkv + Attention ? 1 : t < Qkv + Attention + O ? 2 : t < Qkv + Attention + O + GateUp ? 3 : 4;

    /// <summary>The first ticket of stage <paramref name="stage"/>.</summary>
    public readonly int First(int stage) => stage == 0 ? 0 : stage == 1 ? Qkv : stage == 2 ? Qkv + Attention : stage == 3 ? Qkv + Attention + O : Qkv + Attention + O + GateUp;

    /// <summary>Tasks of stage <paramref name="stage"/>.</summary>
    public readonly int Count(int stage) => stage == 0 ? Qkv : stage == 1 ? Attention : stage == 2 ? O : stage == 3 ? GateUp : Down;
}

/// <summary>The weights of one layer as the persistent decode kernel reads them.</summary>
/// <param name="Qkv">q, k and v projections</param>
/// <param name="O">o projection</param>
/// <param name="Gate">gate projection</param>
/// <param name="Up">up projection</param>
/// <param name="Down">down projection</param>
/// <param name="InputNorm">the attention block's RMSNorm (fused into q/k/v)</param>
/// <param name="PostAttentionNorm">the MLP block's RMSNorm (fused into gate/up)</param>
public readonly record struct DecodeLayerWeights(QkvWeights Qkv, WeightMatrix O, WeightMatrix Gate, WeightMatrix Up, WeightMatrix Down, FusedNorm InputNorm, FusedNorm PostAttentionNorm);

/// <summary>The activations one layer's persistent launch reads and writes.</summary>
/// <param name="X">[batch, hidden] the residual stream, read and updated in place</param>
/// <param name="RopeTable">[max_seq, head_dim/2, 2] (cos, sin)</param>
/// <param name="Attention">attention's buffers: the rotated q (written by the q/k/v tasks), this layer's K and V cache (appended to by them), slots, positions, output, split partials</param>
/// <param name="Hidden">[batch, intermediate] silu(gate) * up</param>
/// <param name="Sync">[<see cref="DecodeLayerKernels.SyncInts"/>] the task counters, zero between launches</param>
public readonly record struct DecodeLayerBuffers(ArrayView<float> X, ArrayView<float> RopeTable, AttentionBuffers Attention, ArrayView<float> Hidden, ArrayView<int> Sync);

/// <summary>The persistent decode layer. See the file header.</summary>
public static class DecodeLayerKernels
{
    /// <summary>Counters one layer launch uses: the ticket, the leavers, one per stage.</summary>
    public const int SyncInts = 8;

    /// <summary>Stages of a layer, in task order.</summary>
    public const int Stages = 5;

    const int TicketSlot = 0, LeaverSlot = 1, DoneSlot = 2;

    /// <summary>One decoder layer of a decode step. See the file header.</summary>
    public static void DecodeLayer<TW, TB>(DecodeLayerArgs a)
        where TW : struct, IWeightFormat
        where TB : struct, IBatchWidth
    {
        var ticket = SharedMemory.Allocate<int>(1);
        var tasks = a.Tasks;
        int total = tasks.Total;
        for (; ; )
        {
            if (Group.IdxX == 0)
                ticket[0] = Atomic.Add(ref a.Sync[TicketSlot], 1);
            Group.Barrier();
            int t = ticket[0];
            // Every thread has read the ticket before thread 0 may overwrite it.
            Group.Barrier();
            if (t >= total)
                break;
            int stage = tasks.Stage(t);
            int index = t - tasks.First(stage);
            // Every task of the stage before (and so of every earlier stage) is done.
            if (stage > 0)
                WaitFor(a.Sync, stage - 1, tasks.Count(stage - 1));
            if (stage == 0)
                MatVecKernels.MatVecQkvRopeTile<TW, RmsNormedInput, TB>(a.Qkv, index);
            else if (stage == 1)
                AttentionKernels.AttentionBlock<Fp16CacheValues>(a.Attention, index);
            else if (stage == 2)
                MatVecKernels.MatVecTile<TW, PlainInput, TB>(a.O, index);
            else if (stage == 3)
                MatVecKernels.MatVecSwiGluTile<TW, RmsNormedInput, TB>(a.GateUp, index);
            else
                MatVecKernels.MatVecTile<TW, PlainInput, TB>(a.Down, index);
            Finish(a.Sync, stage);
        }
        if (Group.IdxX == 0 && Atomic.Add(ref a.Sync[LeaverSlot], 1) == Grid.DimX - 1)
        {
            // Every group has drawn its last ticket: zero the counters for the next launch.
            for (int i = 0; i < SyncInts; i++)
                a.Sync[i] = 0;
        }
    }

    /// <summary>Thread 0 spins on an atomic read until stage <paramref name="stage"/> counts <paramref name="tasks"/> finished tasks; then the group goes on.</summary>
    static void WaitFor(ArrayView<int> sync, int stage, int tasks)
    {
        if (Group.IdxX == 0)
        {
            while (Atomic.Add(ref sync[DoneSlot + stage], 0) < tasks)
            {
            }
            MemoryFence.DeviceLevel();
        }
        Group.Barrier();
    }

    /// <summary>Publishes the group's writes, then counts its task done in stage <paramref name="stage"/>.</summary>
    static void Finish(ArrayView<int> sync, int stage)
    {
        MemoryFence.DeviceLevel();
        Group.Barrier();
        if (Group.IdxX == 0)
            Atomic.Add(ref sync[DoneSlot + stage], 1);
    }

    // ---- declaration, launcher, cost ------------------------------------------------------

    /// <summary>Family name (this file).</summary>
    public const string Family = "decode_layer";

    /// <summary><see cref="DecodeLayer{TW, TB}"/>, per weight format and batch width.</summary>
    public static KernelDefinition<DecodeLayerArgs> DecodeLayerKernel { get; } = KernelDefinition<DecodeLayerArgs>.Explicit("decode_layer", Family, DecodeLayer<Fp16Format.Device, Batch1>, t =>
    {
        int floats = AttentionKernels.SharedFloats(AttentionKernels.StaticCheckShape, t.AttentionGroup);
        return new LaunchShape(t.AttentionGroup, floats * sizeof(float),
            $"persistent: the attention group size and its {floats} floats of dynamic shared memory (llama-3.2-1b heads)");
    }, WeightFormat.All, perBatchWidth: true);

    /// <summary>The task list of one layer launch: each stage's tasks are the per-operation kernel's groups.</summary>
    public static LayerTasks Tasks(int hidden, int intermediate, int batch, int splits, AttentionShape s) => new()
    {
        Qkv = (s.QDim + 2 * s.KvDim) / 2,
        Attention = batch * s.KvHeads * splits,
        O = (hidden + 1) / 2,
        GateUp = intermediate,
        Down = (hidden + 1) / 2,
    };

    /// <summary>
    /// One decoder layer of a decode step for <paramref name="batch"/> sequences in one launch:
    /// x += o(attention(rope(q), cache(rope(k), v))) of rmsnorm(x), then x += down(silu(gate) * up)
    /// of rmsnorm(x), as the fused-norm step's five launches compute it.
    /// </summary>
    public static void DecodeLayer(this LlamaKernels k, DecodeLayerWeights w, DecodeLayerBuffers b, int batch, int splits, AttentionShape s)
    {
        int hidden = w.Qkv.Q.Cols, inter = w.Gate.Rows;
        Require.Length(b.Sync, SyncInts, "decode layer counters");
        Require.That(s.Cache.Type == KvCacheType.Fp16, "decode layer: the persistent kernel reads an fp16 KV cache (an fp32 cache runs with the fused-norm variant)");
        var (qkv, width) = MatVecKernels.QkvRopeArguments(w.Qkv, b.X, b.Attention.Q, b.Attention.KCache, b.Attention.VCache, b.RopeTable, b.Attention.Slots, b.Attention.Positions, batch, s, w.InputNorm);
        var attention = AttentionKernels.AttentionArguments(k.Tuning, b.Attention, batch, splits, s);
        var (o, _) = MatVecKernels.MatVecArguments(w.O, b.Attention.Output, b.X, batch, accumulate: true);
        var (gateUp, _) = MatVecKernels.SwiGluArguments(w.Gate, w.Up, b.X, b.Hidden, batch, w.PostAttentionNorm);
        var (down, _) = MatVecKernels.MatVecArguments(w.Down, b.Hidden, b.X, batch, accumulate: true);
        Require.That(w.O.Rows == hidden && w.Down.Rows == hidden && w.Down.Cols == inter, "decode layer: o and down must write the hidden size, down must read the intermediate size");
        Require.That(w.O.Format == w.Qkv.Q.Format && w.Qkv.V.Format == w.Qkv.Q.Format && w.Gate.Format == w.Qkv.Q.Format && w.Down.Format == w.Qkv.Q.Format,
            "decode layer: every matrix of a layer must share one format (a model that mixes formats, such as Q4_K_M, runs with the fused-norm variant)");
        var args = new DecodeLayerArgs
        {
            Qkv = qkv, Attention = attention, O = o, GateUp = gateUp, Down = down, Sync = b.Sync,
            Tasks = Tasks(hidden, inter, batch, splits, s),
        };
        int group = k.Tuning.AttentionGroup;
        var config = new KernelConfig(PersistentGroups(k), group, SharedMemoryConfig.RequestDynamic<float>(AttentionKernels.SharedFloats(s, group)));
        k.Launch(DecodeLayerKernel, DecodeLayerKernel.Variant(w.Qkv.Q.Format, width), config, args);
    }

    /// <summary>Groups of a persistent launch: the tuning's choice, else four per multiprocessor on a GPU and one per emulated multiprocessor on the CPU.</summary>
    public static int PersistentGroups(LlamaKernels k) =>
        k.Tuning.PersistentGroups > 0 ? k.Tuning.PersistentGroups
        : k.Accelerator.NumMultiprocessors * (k.Accelerator.AcceleratorType == AcceleratorType.CPU ? 1 : 4);

    /// <summary>Global memory bytes one layer launch must move: its matrices, the attention reads, the activations.</summary>
    public static long BytesMoved(WeightFormat format, int hidden, int intermediate, int batch, AttentionShape s, long keysPerRow) =>
        MatVecKernels.QkvRopeBytesMoved(format, hidden, batch, s) + AttentionKernels.BytesMoved(batch, s, keysPerRow)
        + MatVecKernels.BytesMoved(format, hidden, s.QDim, batch, true) + MatVecKernels.SwiGluBytesMoved(format, intermediate, hidden, batch)
        + MatVecKernels.BytesMoved(format, hidden, intermediate, batch, true);

    /// <summary>FLOPs of one layer launch.</summary>
    public static long Flops(int hidden, int intermediate, int batch, AttentionShape s, long keysPerRow) =>
        MatVecKernels.QkvRopeFlops(hidden, batch, s) + AttentionKernels.Flops(batch, s, keysPerRow)
        + MatVecKernels.Flops(hidden, s.QDim, batch) + MatVecKernels.SwiGluFlops(intermediate, hidden, batch) + MatVecKernels.Flops(hidden, intermediate, batch);
}

/// <summary>The persistent decode-layer family (the benchmark cases: <c>DecodeLayerBenchCases</c> in kernels/IlgpuLlama.Kernels.Bench).</summary>
sealed class DecodeLayerFamily : KernelFamily
{
    public override string Name => DecodeLayerKernels.Family;

    public override IReadOnlyList<IKernelDefinition> Kernels => [DecodeLayerKernels.DecodeLayerKernel];
}
