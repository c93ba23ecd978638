namespace IlgpuLlama.Kernels;

// Logits helpers, so that only a few numbers per sequence cross to the host each step.
//
//   Reduce   per row: argmax (first index on ties, -1 if any NaN), max logit, and the softmax
//            normaliser Z = sum_v exp((l_v - max) / T). Grid = rows * parts groups; each group
//            scans a contiguous slice keeping (max, Z, argmax) online, reduces with shuffles and
//            shared memory, writes a partial; the last group of the row (atomic counter +
//            device fence) merges the partials and resets the counter. One launch.
//   TopK     per row: the K largest logits with ids, sorted descending (ties: smaller id first).
//            Each group bitonic-sorts its slice (padded to a power of two) in shared memory and
//            keeps K; the last group of the row sorts the parts * K survivors and writes K.
//            Dynamic shared memory: 2 * SliceSize floats (values, then ids as bits).
//   RepetitionPenalty  per element: a token already seen in the row's sequence gets
//            l > 0 ? l / p : l * p (Hugging Face semantics). Implicitly grouped, rows * vocab.

/// <summary>Arguments of <see cref="LogitsKernels.Reduce"/>.</summary>
public struct LogitsReduceArgs
{
    public ArrayView<float> Logits;     // [rows, vocab]
    public ArrayView<float> PartialMax; // [rows, parts]
    public ArrayView<float> PartialSum; // [rows, parts]
    public ArrayView<int> PartialIdx;   // [rows, parts]
    public ArrayView<int> Counters;     // [rows], zero between launches
    public ArrayView<int> Token;        // [rows] argmax, -1 when the row has a NaN
    public ArrayView<float> Max;        // [rows]
    public ArrayView<float> SumExp;     // [rows] Z at InvTemperature
    public int Vocab, Parts;
    public float InvTemperature;
}

/// <summary>Arguments of <see cref="LogitsKernels.TopK"/>.</summary>
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

        SoftmaxState s = SoftmaxState.Empty;
        for (int i = begin + Group.IdxX; i < end; i += Group.DimX)
            s = Push(s, a.Logits[rowBase + i], i, a.InvTemperature);
        s = GroupReduce(s, a.InvTemperature, mShared, zShared, iShared, nShared);

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
            r = Merge(r, o, a.InvTemperature);
        }
        r = GroupReduce(r, a.InvTemperature, mShared, zShared, iShared, nShared);
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

    /// <summary>Bytes of <see cref="Reduce"/>: every logit read once (the partials are negligible).</summary>
    public static long ReduceBytesMoved(int rows, int vocab) => 4L * rows * vocab + 16L * rows;

    /// <summary>FLOPs of <see cref="Reduce"/>: subtract, scale, exp and add per logit.</summary>
    public static long ReduceFlops(int rows, int vocab) => 4L * rows * vocab;

    /// <summary>Bytes of <see cref="TopK"/>: every logit read once, k values and ids written per row.</summary>
    public static long TopKBytesMoved(int rows, int vocab, int k) => 4L * rows * vocab + 8L * rows * k;

    /// <summary>Bytes of <see cref="RepetitionPenalty"/>: one seen flag per logit, and the seen logits read and written.</summary>
    public static long RepetitionPenaltyBytesMoved(int rows, int vocab, long seenCount) => (long)rows * vocab + 8L * seenCount + 4L * rows;

    /// <param name="index">flat index over [rows, vocab]</param>
    /// <param name="logits">[rows, vocab], in place</param>
    /// <param name="slots">[rows] sequence slot of each row</param>
    /// <param name="seen">[slots, vocab] 1 where the token already appeared</param>
    public static void RepetitionPenalty(Index1D index, ArrayView<float> logits, ArrayView<int> slots, ArrayView<byte> seen, int vocab, float penalty)
    {
        int row = index / vocab;
        int v = index - row * vocab;
        if (seen[slots[row] * vocab + v] != 0)
        {
            float l = logits[index];
            logits[index] = l > 0f ? l / penalty : l * penalty;
        }
    }
}
