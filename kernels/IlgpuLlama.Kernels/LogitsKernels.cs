namespace IlgpuLlama.Kernels;

// Logits helpers, so that only a few numbers per sequence cross to the host each step.
//
//   Reduce   per row: argmax (first index on ties, -1 if any NaN), max logit, and the softmax
//            normaliser Z = sum_v exp((l_v - max) / T_row), T_row read from device memory (so a
//            recorded step serves every temperature). Grid = rows * parts groups; each group
//            scans a contiguous slice keeping (max, Z, argmax) online, reduces with shuffles and
//            shared memory, writes a partial; the last group of the row (atomic counter +
//            device fence) merges the partials and resets the counter. One launch.
//   TopK     per row: the K largest logits with ids, sorted descending (ties: smaller id first).
//            Each group bitonic-sorts its slice (padded to a power of two) in shared memory and
//            keeps K; the last group of the row sorts the parts * K survivors and writes K.
//            Dynamic shared memory: 2 * SliceSize floats (values, then ids as bits).
//   RepetitionPenalty  per element: a token already seen in the row's sequence gets
//            l > 0 ? l / p_row : l * p_row (Hugging Face semantics), p_row read from device memory
//            (1 leaves the row unchanged, bit for bit). Implicitly grouped, rows * vocab.

/// <summary>Arguments of <see cref="LogitsKernels.Reduce(LogitsReduceArgs)"/>.</summary>
public struct LogitsReduceArgs
{
    public ArrayView<float> Logits;     // [rows, vocab]
    public ArrayView<float> PartialMax; // [rows, parts]
    public ArrayView<float> PartialSum; // [rows, parts]
    public ArrayView<int> PartialIdx;   // [rows, parts]
    public ArrayView<int> Counters;     // [rows], zero between launches
    public ArrayView<int> Token;        // [rows] argmax, -1 when the row has a NaN
    public ArrayView<float> Max;        // [rows]
    public ArrayView<float> SumExp;     // [rows] Z at the row's temperature
    public ArrayView<float> InvTemperature; // [rows] 1 / T of each row
    public int Vocab, Parts;
}

/// <summary>Arguments of <see cref="LogitsKernels.TopK(TopKArgs)"/>.</summary>
public struct TopKArgs
{
    public ArrayView<float> Logits;     // [rows, vocab]
    public ArrayView<float> PartialVal; // [rows, parts, k]
    public ArrayView<int> PartialIdx;   // [rows, parts, k]
    public ArrayView<int> Counters;     // [rows], zero between launches
    public ArrayView<float> OutVal;     // [rows, k] descending
    public ArrayView<int> OutIdx;       // [rows, k]
    public int Vocab, Parts, K, SliceSize;
}

/// <summary>Arguments of <see cref="LogitsKernels.RepetitionPenalty(Index1D, RepetitionPenaltyArgs)"/>.</summary>
public struct RepetitionPenaltyArgs
{
    public ArrayView<float> Logits;     // [rows, vocab], in place
    public ArrayView<int> Slots;        // [rows] sequence slot of each row
    public ArrayView<byte> Seen;        // [slots, vocab] 1 where the token already appeared
    public ArrayView<float> Penalty;    // [rows] penalty of each row (1 = off)
    public int Vocab;
}

/// <summary>The workspace and outputs of one logits reduction.</summary>
/// <param name="PartialMax">[rows, parts]</param>
/// <param name="PartialSum">[rows, parts]</param>
/// <param name="PartialIdx">[rows, parts]</param>
/// <param name="Counters">[rows], zero between launches</param>
/// <param name="Token">[rows] argmax, -1 when the row has a NaN</param>
/// <param name="Max">[rows] max logit</param>
/// <param name="SumExp">[rows] softmax normaliser at the temperature</param>
public readonly record struct LogitsReduceBuffers(ArrayView<float> PartialMax, ArrayView<float> PartialSum, ArrayView<int> PartialIdx, ArrayView<int> Counters,
    ArrayView<int> Token, ArrayView<float> Max, ArrayView<float> SumExp);

/// <summary>The workspace and outputs of one top-k.</summary>
/// <param name="PartialVal">[rows, parts, k]</param>
/// <param name="PartialIdx">[rows, parts, k]</param>
/// <param name="Counters">[rows], zero between launches</param>
/// <param name="Values">[rows, k] descending</param>
/// <param name="Ids">[rows, k]</param>
public readonly record struct TopKBuffers(ArrayView<float> PartialVal, ArrayView<int> PartialIdx, ArrayView<int> Counters, ArrayView<float> Values, ArrayView<int> Ids);

/// <summary>Running (max, sum of exp, argmax, NaN seen) of a set of logits.</summary>
public struct SoftmaxState
{
    public float M, Z;
    public int Idx, Nan;

    public static SoftmaxState Empty
    {
        get
        {
            SoftmaxState s;
            s.M = float.NegativeInfinity;
            s.Z = 0f;
            s.Idx = int.MaxValue;
            s.Nan = 0;
            return s;
        }
    }
}

/// <summary>Argmax, softmax normaliser, top-k and repetition penalty on the device.</summary>
public static class LogitsKernels
{
    /// <summary>Most warps one group may have.</summary>
    public const int MaxWarps = 64;

    static SoftmaxState Push(SoftmaxState s, float v, int i, float invT)
    {
        if (XMath.IsNaN(v))
        {
            s.Nan = 1;
        }
        else if (v > s.M)
        {
            s.Z = (s.M == float.NegativeInfinity ? 0f : s.Z * XMath.Exp((s.M - v) * invT)) + 1f;
            s.M = v;
            s.Idx = i;
        }
        else if (v != float.NegativeInfinity)
        {
            s.Z += XMath.Exp((v - s.M) * invT);
            if (v == s.M && i < s.Idx)
                s.Idx = i;
        }
        return s;
    }

    /// <summary>Merges two states (associative; ties keep the smaller index).</summary>
    public static SoftmaxState Merge(SoftmaxState a, SoftmaxState b, float invT)
    {
        SoftmaxState r;
        r.Nan = a.Nan | b.Nan;
        r.M = XMath.Max(a.M, b.M);
        r.Idx = a.M > b.M ? a.Idx : b.M > a.M ? b.Idx : XMath.Min(a.Idx, b.Idx);
        float za = a.M == float.NegativeInfinity ? 0f : a.Z * XMath.Exp((a.M - r.M) * invT);
        float zb = b.M == float.NegativeInfinity ? 0f : b.Z * XMath.Exp((b.M - r.M) * invT);
        r.Z = za + zb;
        return r;
    }

    static SoftmaxState WarpReduce(SoftmaxState s, float invT)
    {
        for (int offset = Warp.WarpSize / 2; offset > 0; offset >>= 1)
        {
            SoftmaxState o;
            o.M = Warp.ShuffleXor(s.M, offset);
            o.Z = Warp.ShuffleXor(s.Z, offset);
            o.Idx = Warp.ShuffleXor(s.Idx, offset);
            o.Nan = Warp.ShuffleXor(s.Nan, offset);
            s = Merge(s, o, invT);
        }
        return s;
    }

    /// <summary>Group-wide reduction; the result is valid in every thread.</summary>
    static SoftmaxState GroupReduce(SoftmaxState s, float invT, ArrayView<float> mShared, ArrayView<float> zShared, ArrayView<int> iShared, ArrayView<int> nShared)
    {
        s = WarpReduce(s, invT);
        if (Warp.IsFirstLane)
        {
            mShared[Warp.WarpIdx] = s.M;
            zShared[Warp.WarpIdx] = s.Z;
            iShared[Warp.WarpIdx] = s.Idx;
            nShared[Warp.WarpIdx] = s.Nan;
        }
        Group.Barrier();
        SoftmaxState r = SoftmaxState.Empty;
        int warps = Group.DimX / Warp.WarpSize;
        for (int w = 0; w < warps; w++)
        {
            SoftmaxState o;
            o.M = mShared[w];
            o.Z = zShared[w];
            o.Idx = iShared[w];
            o.Nan = nShared[w];
            r = Merge(r, o, invT);
        }
        Group.Barrier(); // the scratch may be reused right after
        return r;
    }

    /// <summary>Argmax, max and softmax normaliser per row. See the file header.</summary>
    public static void Reduce(LogitsReduceArgs a)
    {
        var mShared = SharedMemory.Allocate<float>(MaxWarps);
        var zShared = SharedMemory.Allocate<float>(MaxWarps);
        var iShared = SharedMemory.Allocate<int>(MaxWarps);
        var nShared = SharedMemory.Allocate<int>(MaxWarps);
        var lastFlag = SharedMemory.Allocate<int>(1);

        int row = Grid.IdxX / a.Parts;
        int part = Grid.IdxX - row * a.Parts;
        int slice = (a.Vocab + a.Parts - 1) / a.Parts;
        int begin = part * slice;
        int end = XMath.Min(begin + slice, a.Vocab);
        int rowBase = row * a.Vocab;
        float invT = a.InvTemperature[row];

        SoftmaxState s = SoftmaxState.Empty;
        for (int i = begin + Group.IdxX; i < end; i += Group.DimX)
            s = Push(s, a.Logits[rowBase + i], i, invT);
        s = GroupReduce(s, invT, mShared, zShared, iShared, nShared);

        int p = row * a.Parts + part;
        if (Group.IdxX == 0)
        {
            a.PartialMax[p] = s.M;
            a.PartialSum[p] = s.Z;
            a.PartialIdx[p] = s.Nan != 0 ? -1 : s.Idx;
            MemoryFence.DeviceLevel();
            lastFlag[0] = Atomic.Add(ref a.Counters[row], 1) == a.Parts - 1 ? 1 : 0;
        }
        Group.Barrier();
        if (lastFlag[0] == 0)
            return;
        MemoryFence.DeviceLevel();

        SoftmaxState r = SoftmaxState.Empty;
        for (int q = Group.IdxX; q < a.Parts; q += Group.DimX)
        {
            SoftmaxState o;
            o.M = a.PartialMax[row * a.Parts + q];
            o.Z = a.PartialSum[row * a.Parts + q];
            int idx = a.PartialIdx[row * a.Parts + q];
            o.Idx = idx < 0 ? int.MaxValue : idx;
            o.Nan = idx < 0 ? 1 : 0;
            r = Merge(r, o, invT);
        }
        r = GroupReduce(r, invT, mShared, zShared, iShared, nShared);
        if (Group.IdxX == 0)
        {
            a.Token[row] = r.Nan != 0 || r.Idx == int.MaxValue ? -1 : r.Idx;
            a.Max[row] = r.M;
            a.SumExp[row] = r.Z;
            a.Counters[row] = 0;
        }
    }

    // (value, index) ordering for top-k: larger value first, then smaller index.
    static bool Before(float va, int ia, float vb, int ib) => va > vb || (va == vb && ia < ib);

    /// <summary>In-place descending bitonic sort of n (a power of two) pairs in shared memory.</summary>
    static void BitonicSort(ArrayView<float> vals, ArrayView<float> idxBits, int n)
    {
        for (int size = 2; size <= n; size <<= 1)
        {
            for (int stride = size >> 1; stride > 0; stride >>= 1)
            {
                for (int i = Group.IdxX; i < n / 2; i += Group.DimX)
                {
                    int lo = 2 * i - (i & (stride - 1));
                    int hi = lo + stride;
                    bool descending = (lo & size) == 0;
                    float vl = vals[lo];
                    float vh = vals[hi];
                    int il = (int)Interop.FloatAsInt(idxBits[lo]);
                    int ih = (int)Interop.FloatAsInt(idxBits[hi]);
                    bool swap = descending ? Before(vh, ih, vl, il) : Before(vl, il, vh, ih);
                    if (swap)
                    {
                        vals[lo] = vh;
                        vals[hi] = vl;
                        float t = idxBits[lo];
                        idxBits[lo] = idxBits[hi];
                        idxBits[hi] = t;
                    }
                }
                Group.Barrier();
            }
        }
    }

    /// <summary>Top-K logits per row, sorted. See the file header.</summary>
    public static void TopK(TopKArgs a)
    {
        var smem = SharedMemory.GetDynamic<float>();
        var lastFlag = SharedMemory.Allocate<int>(1);
        ArrayView<float> vals = smem.SubView(0, a.SliceSize);
        ArrayView<float> ids = smem.SubView(a.SliceSize, a.SliceSize);

        int row = Grid.IdxX / a.Parts;
        int part = Grid.IdxX - row * a.Parts;
        int slice = (a.Vocab + a.Parts - 1) / a.Parts;
        int begin = part * slice;
        int rowBase = row * a.Vocab;

        for (int i = Group.IdxX; i < a.SliceSize; i += Group.DimX)
        {
            int v = begin + i;
            bool inside = i < slice && v < a.Vocab;
            vals[i] = inside ? a.Logits[rowBase + v] : float.NegativeInfinity;
            ids[i] = Interop.IntAsFloat((uint)(inside ? v : int.MaxValue));
        }
        Group.Barrier();
        BitonicSort(vals, ids, a.SliceSize);

        int pBase = (row * a.Parts + part) * a.K;
        for (int i = Group.IdxX; i < a.K; i += Group.DimX)
        {
            a.PartialVal[pBase + i] = vals[i];
            a.PartialIdx[pBase + i] = (int)Interop.FloatAsInt(ids[i]);
        }
        MemoryFence.DeviceLevel();
        Group.Barrier();
        if (Group.IdxX == 0)
            lastFlag[0] = Atomic.Add(ref a.Counters[row], 1) == a.Parts - 1 ? 1 : 0;
        Group.Barrier();
        if (lastFlag[0] == 0)
            return;
        MemoryFence.DeviceLevel();

        int candidates = a.Parts * a.K;
        int rBase = row * a.Parts * a.K;
        for (int i = Group.IdxX; i < a.SliceSize; i += Group.DimX)
        {
            bool inside = i < candidates;
            vals[i] = inside ? a.PartialVal[rBase + i] : float.NegativeInfinity;
            ids[i] = Interop.IntAsFloat((uint)(inside ? a.PartialIdx[rBase + i] : int.MaxValue));
        }
        Group.Barrier();
        BitonicSort(vals, ids, a.SliceSize);
        for (int i = Group.IdxX; i < a.K; i += Group.DimX)
        {
            a.OutVal[row * a.K + i] = vals[i];
            a.OutIdx[row * a.K + i] = (int)Interop.FloatAsInt(ids[i]);
        }
        if (Group.IdxX == 0)
            a.Counters[row] = 0;
    }

    /// <param name="index">flat index over [rows, vocab]</param>
    /// <param name="a">logits, slots, seen flags, vocabulary and per-row penalties</param>
    public static void RepetitionPenalty(Index1D index, RepetitionPenaltyArgs a)
    {
        int row = index / a.Vocab;
        int v = index - row * a.Vocab;
        if (a.Seen[a.Slots[row] * a.Vocab + v] != 0)
        {
            float l = a.Logits[index];
            float p = a.Penalty[row];
            a.Logits[index] = l > 0f ? l / p : l * p;
        }
    }

    // ---- declarations, launchers, cost ----------------------------------------------------

    /// <summary>Family name (this file).</summary>
    public const string Family = "logits";

    /// <summary><see cref="Reduce(LogitsReduceArgs)"/>.</summary>
    public static KernelDefinition<LogitsReduceArgs> ReduceKernel { get; } = KernelDefinition<LogitsReduceArgs>.Explicit("logits_reduce", Family, Reduce,
        t => new LaunchShape(t.LogitsGroup, 0, $"slice {t.LogitsSlice} logits per group"));

    /// <summary><see cref="TopK(TopKArgs)"/>.</summary>
    public static KernelDefinition<TopKArgs> TopKKernel { get; } = KernelDefinition<TopKArgs>.Explicit("topk", Family, TopK,
        t => new LaunchShape(t.LogitsGroup, 2 * t.TopKSlice * sizeof(float), $"slice {t.TopKSlice}: 2 x {t.TopKSlice} floats of dynamic shared memory"));

    /// <summary><see cref="RepetitionPenalty(Index1D, RepetitionPenaltyArgs)"/>.</summary>
    public static KernelDefinition<RepetitionPenaltyArgs> RepetitionPenaltyKernel { get; } =
        KernelDefinition<RepetitionPenaltyArgs>.Implicit("repetition_penalty", Family, RepetitionPenalty);

    /// <summary>Groups per row the logits reduction uses (sizes its partial buffers).</summary>
    public static int ReduceParts(int vocab, KernelTuning t) => Math.Max(1, (vocab + t.LogitsSlice - 1) / t.LogitsSlice);

    /// <summary>Groups per row top-k uses (sizes its partial buffers).</summary>
    public static int TopKParts(int vocab, KernelTuning t) => Math.Max(1, (vocab + t.TopKSlice - 1) / t.TopKSlice);

    /// <summary>Largest k top-k supports for <paramref name="vocab"/> (each part keeps k of its slice).</summary>
    public static int TopKMax(int vocab, KernelTuning t) => t.TopKSlice / TopKParts(vocab, t);

    /// <summary>
    /// The value the logits reduction reads per row for temperature <paramref name="temperature"/>:
    /// 1 / T. For T below ~2.9e-39 (e.g. 1e-45) 1 / T overflows float, and infinity times the max
    /// logit's zero offset would be NaN, so the largest float stands in (the same distribution: all
    /// mass on the max). T = 0 (greedy) reads 1 (the argmax does not depend on it).
    /// </summary>
    public static float InverseTemperature(float temperature) => temperature > 0 ? Math.Min(1f / temperature, float.MaxValue) : 1f;

    /// <summary>
    /// Per row: argmax token (-1 on NaN), max logit and sum of exp((l - max) / T_row), with
    /// <paramref name="invTemperature"/>[row] = <see cref="InverseTemperature(float)"/> of the row's T.
    /// </summary>
    public static void LogitsReduce(this LlamaKernels k, ArrayView<float> logits, LogitsReduceBuffers b, ArrayView<float> invTemperature, int rows, int vocab)
    {
        int parts = ReduceParts(vocab, k.Tuning);
        Require.Length(logits, (long)rows * vocab, "logits");
        Require.Length(b.PartialMax, (long)rows * parts, "logits partial max");
        Require.Length(b.PartialSum, (long)rows * parts, "logits partial sum");
        Require.Length(b.PartialIdx, (long)rows * parts, "logits partial index");
        Require.Length(b.Counters, rows, "logits counters");
        Require.Length(b.Token, rows, "argmax output");
        Require.Length(invTemperature, rows, "inverse temperatures");
        var args = new LogitsReduceArgs
        {
            Logits = logits, PartialMax = b.PartialMax, PartialSum = b.PartialSum, PartialIdx = b.PartialIdx, Counters = b.Counters,
            Token = b.Token, Max = b.Max, SumExp = b.SumExp, InvTemperature = invTemperature, Vocab = vocab, Parts = parts,
        };
        k.Launch(ReduceKernel, KernelVariant.None, new KernelConfig(rows * parts, k.Tuning.LogitsGroup), args);
    }

    /// <summary>Top-<paramref name="topK"/> logits and ids per row, sorted descending.</summary>
    public static void TopK(this LlamaKernels k, ArrayView<float> logits, TopKBuffers b, int rows, int vocab, int topK)
    {
        var t = k.Tuning;
        int parts = TopKParts(vocab, t);
        Require.That(topK >= 1 && topK <= TopKMax(vocab, t), $"top-k: k {topK} must be between 1 and {TopKMax(vocab, t)} for a vocabulary of {vocab}");
        Require.Length(logits, (long)rows * vocab, "logits");
        Require.Length(b.PartialVal, (long)rows * parts * topK, "top-k partial values");
        Require.Length(b.PartialIdx, (long)rows * parts * topK, "top-k partial ids");
        Require.Length(b.Counters, rows, "top-k counters");
        Require.Length(b.Values, (long)rows * topK, "top-k values");
        Require.Length(b.Ids, (long)rows * topK, "top-k ids");
        var args = new TopKArgs
        {
            Logits = logits, PartialVal = b.PartialVal, PartialIdx = b.PartialIdx, Counters = b.Counters, OutVal = b.Values, OutIdx = b.Ids,
            Vocab = vocab, Parts = parts, K = topK, SliceSize = t.TopKSlice,
        };
        k.Launch(TopKKernel, KernelVariant.None, new KernelConfig(rows * parts, t.LogitsGroup, SharedMemoryConfig.RequestDynamic<float>(2 * t.TopKSlice)), args);
    }

    /// <summary>
    /// Applies each row's repetition penalty (<paramref name="penalties"/>[row], &gt; 0; 1 = off) in
    /// place to the row's seen tokens. The values live on the device, so the host checks them where it
    /// writes them.
    /// </summary>
    public static void RepetitionPenalty(this LlamaKernels k, ArrayView<float> logits, ArrayView<int> slots, ArrayView<byte> seen, ArrayView<float> penalties, int rows, int vocab)
    {
        Require.Length(logits, (long)rows * vocab, "logits");
        Require.Length(slots, rows, "penalty slots");
        Require.Length(penalties, rows, "penalties");
        var args = new RepetitionPenaltyArgs { Logits = logits, Slots = slots, Seen = seen, Penalty = penalties, Vocab = vocab };
        k.Launch(RepetitionPenaltyKernel, KernelVariant.None, rows * vocab, args);
    }

    /// <summary>Bytes of <see cref="Reduce(LogitsReduceArgs)"/>: every logit read once (the partials are negligible).</summary>
    public static long ReduceBytesMoved(int rows, int vocab) => 4L * rows * vocab + 16L * rows;

    /// <summary>FLOPs of <see cref="Reduce(LogitsReduceArgs)"/>: subtract, scale, exp and add per logit.</summary>
    public static long ReduceFlops(int rows, int vocab) => 4L * rows * vocab;

    /// <summary>Bytes of top-k: every logit read once, k values and ids written per row.</summary>
    public static long TopKBytesMoved(int rows, int vocab, int k) => 4L * rows * vocab + 8L * rows * k;

    /// <summary>Bytes of the repetition penalty: one seen flag per logit, and the seen logits read and written.</summary>
    public static long RepetitionPenaltyBytesMoved(int rows, int vocab, long seenCount) => (long)rows * vocab + 8L * seenCount + 4L * rows;
}

/// <summary>The logits family: its kernels (the benchmark cases: <c>LogitsBenchCases</c> in kernels/IlgpuLlama.Kernels.Bench).</summary>
sealed class LogitsFamily : KernelFamily
{
    public override string Name => LogitsKernels.Family;

    public override IReadOnlyList<IKernelDefinition> Kernels => [LogitsKernels.ReduceKernel, LogitsKernels.TopKKernel, LogitsKernels.RepetitionPenaltyKernel];
}
