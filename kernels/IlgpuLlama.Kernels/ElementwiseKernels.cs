namespace IlgpuLlama.Kernels;

// Small element-wise kernels used by prefill (decode fuses them into the matmuls).
// Decomposition: one thread per element (implicitly grouped).
//   SwiGlu      gate = silu(gate) * up, in place                 grid = tokens * intermediate
//   GatherRows  dst[i, :] = src[rows[i], :]                       grid = count * width
//   MarkSeen    seen[slot, token] = 1 (repetition-penalty state)  grid = tokens
//   AddScalar   values += delta (advances decode positions on the device) grid = count

/// <summary>Arguments of <see cref="ElementwiseKernels.SwiGlu(Index1D, SwiGluArgs)"/>.</summary>
public struct SwiGluArgs
{
    public ArrayView<float> Gate;  // [n] fp32, overwritten with silu(gate) * up
    public ArrayView<float> Up;    // [n] fp32
}

/// <summary>Arguments of <see cref="ElementwiseKernels.GatherRows(Index1D, GatherRowsArgs)"/>.</summary>
public struct GatherRowsArgs
{
    public ArrayView<float> Src;   // [*, width] fp32
    public ArrayView<int> Rows;    // [count] source row of each destination row
    public ArrayView<float> Dst;   // [count, width] fp32
    public int Width;
}

/// <summary>Arguments of <see cref="ElementwiseKernels.MarkSeen(Index1D, MarkSeenArgs)"/>.</summary>
public struct MarkSeenArgs
{
    public ArrayView<int> Tokens;  // [count] token ids
    public ArrayView<int> Slots;   // [count] sequence slot of each token
    public ArrayView<byte> Seen;   // [slots, vocab] flags, 1 once a token appeared in that sequence
    public int Vocab;
}

/// <summary>Arguments of <see cref="ElementwiseKernels.AddScalar(Index1D, AddScalarArgs)"/>.</summary>
public struct AddScalarArgs
{
    public ArrayView<int> Values;  // [count] incremented in place
    public int Delta;
}

/// <summary>Element-wise helpers.</summary>
public static class ElementwiseKernels
{
    /// <summary>gate = silu(gate) * up.</summary>
    public static void SwiGlu(Index1D index, SwiGluArgs a) =>
        a.Gate[index] = DeviceMath.Silu(a.Gate[index]) * a.Up[index];

    /// <summary>dst[i, :] = src[rows[i], :].</summary>
    public static void GatherRows(Index1D index, GatherRowsArgs a)
    {
        int i = index / a.Width;
        int d = index - i * a.Width;
        a.Dst[index] = a.Src[a.Rows[i] * a.Width + d];
    }

    /// <summary>seen[slots[i], tokens[i]] = 1.</summary>
    public static void MarkSeen(Index1D index, MarkSeenArgs a) =>
        a.Seen[a.Slots[index] * a.Vocab + a.Tokens[index]] = 1;

    /// <summary>values[i] += delta.</summary>
    public static void AddScalar(Index1D index, AddScalarArgs a) => a.Values[index] += a.Delta;

    // ---- declarations, launchers, cost ----------------------------------------------------

    /// <summary>Family name (this file).</summary>
    public const string Family = "elementwise";

    /// <summary><see cref="SwiGlu(Index1D, SwiGluArgs)"/>.</summary>
    public static KernelDefinition<SwiGluArgs> SwiGluKernel { get; } = KernelDefinition<SwiGluArgs>.Implicit("swiglu", Family, SwiGlu);

    /// <summary><see cref="GatherRows(Index1D, GatherRowsArgs)"/>.</summary>
    public static KernelDefinition<GatherRowsArgs> GatherRowsKernel { get; } = KernelDefinition<GatherRowsArgs>.Implicit("gather_rows", Family, GatherRows);

    /// <summary><see cref="MarkSeen(Index1D, MarkSeenArgs)"/>.</summary>
    public static KernelDefinition<MarkSeenArgs> MarkSeenKernel { get; } = KernelDefinition<MarkSeenArgs>.Implicit("mark_seen", Family, MarkSeen);

    /// <summary><see cref="AddScalar(Index1D, AddScalarArgs)"/>.</summary>
    public static KernelDefinition<AddScalarArgs> AddScalarKernel { get; } = KernelDefinition<AddScalarArgs>.Implicit("add_scalar", Family, AddScalar);

    /// <summary>gate = silu(gate) * up over <paramref name="count"/> elements.</summary>
    public static void SwiGlu(this LlamaKernels k, ArrayView<float> gate, ArrayView<float> up, int count)
    {
        Require.Length(gate, count, "swiglu gate");
        Require.Length(up, count, "swiglu up");
        k.Launch(SwiGluKernel, KernelVariant.None, count, new SwiGluArgs { Gate = gate, Up = up });
    }

    /// <summary>dst[i, :] = src[rows[i], :].</summary>
    public static void GatherRows(this LlamaKernels k, ArrayView<float> src, ArrayView<int> rows, ArrayView<float> dst, int count, int width)
    {
        Require.Length(rows, count, "gather rows");
        Require.Length(dst, (long)count * width, "gather output");
        k.Launch(GatherRowsKernel, KernelVariant.None, count * width, new GatherRowsArgs { Src = src, Rows = rows, Dst = dst, Width = width });
    }

    /// <summary>seen[slots[i], tokens[i]] = 1.</summary>
    public static void MarkSeen(this LlamaKernels k, ArrayView<int> tokens, ArrayView<int> slots, ArrayView<byte> seen, int count, int vocab)
    {
        Require.Length(tokens, count, "mark-seen tokens");
        Require.Length(slots, count, "mark-seen slots");
        k.Launch(MarkSeenKernel, KernelVariant.None, count, new MarkSeenArgs { Tokens = tokens, Slots = slots, Seen = seen, Vocab = vocab });
    }

    /// <summary>values[i] += delta for i &lt; count (advances decode positions without a host round trip).</summary>
    public static void AddScalar(this LlamaKernels k, ArrayView<int> values, int count, int delta)
    {
        Require.Length(values, count, "add-scalar values");
        k.Launch(AddScalarKernel, KernelVariant.None, count, new AddScalarArgs { Values = values, Delta = delta });
    }

    /// <summary>Bytes of <see cref="SwiGlu(Index1D, SwiGluArgs)"/> over n elements: gate and up read, gate written.</summary>
    public static long SwiGluBytesMoved(long n) => 12L * n;

    /// <summary>FLOPs of <see cref="SwiGlu(Index1D, SwiGluArgs)"/>: negate, exp, add, divide, multiply per element.</summary>
    public static long SwiGluFlops(long n) => 5L * n;
}

/// <summary>The elementwise family: its kernels (the benchmark cases: <c>ElementwiseBenchCases</c> in kernels/IlgpuLlama.Kernels.Bench).</summary>
sealed class ElementwiseFamily : KernelFamily
{
    public override string Name => ElementwiseKernels.Family;

    public override IReadOnlyList<IKernelDefinition> Kernels =>
        [ElementwiseKernels.SwiGluKernel, ElementwiseKernels.GatherRowsKernel, ElementwiseKernels.MarkSeenKernel, ElementwiseKernels.AddScalarKernel];
}
