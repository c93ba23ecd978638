using IlgpuLlama.Kernels.Reference;
namespace IlgpuLlama.Kernels.Bench;

/// <summary>
/// Kernels, device memory and policies shared by every case of one benchmark run. Cases allocate
/// through <see cref="Alloc{T}"/>, which the host implements with its tracking allocator (every
/// buffer named bench.*) and frees when the case is finished.
/// </summary>
public abstract class BenchContext(LlamaKernels kernels, bool isGpu, int seed)
{
    /// <summary>The kernels (and through them the accelerator and stream).</summary>
    public LlamaKernels Kernels { get; } = kernels;

    /// <summary>True on a GPU (inputs are rotated through copies there).</summary>
    public bool IsGpu { get; } = isGpu;

    /// <summary>Base seed of the random data.</summary>
    public int Seed { get; } = seed;

    /// <summary>
    /// The rotation target: inputs smaller than this are replicated so that consecutive launches
    /// read different copies and together stream this many bytes (4 x a 50 MB L2).
    /// </summary>
    public const long RotationBytes = 4L * 50 * 1000 * 1000;

    /// <summary>Upper bound on the number of copies.</summary>
    public const int MaxCopies = 512;

    /// <summary>Allocates a buffer that lives until the current case is finished.</summary>
    public abstract ArrayView<T> Alloc<T>(string name, params long[] shape)
        where T : unmanaged;

    /// <summary>
    /// Copies of inputs of <paramref name="streamedBytes"/> per launch so that the copies together
    /// are at least <see cref="RotationBytes"/>; 1 on the CPU accelerator (its timings are a functional check).
    /// </summary>
    public int CopiesFor(long streamedBytes) =>
        !IsGpu || streamedBytes <= 0 || streamedBytes >= RotationBytes
            ? 1
            : (int)Math.Min(MaxCopies, (RotationBytes + streamedBytes - 1) / streamedBytes);

    /// <summary>Allocates <paramref name="copies"/> back-to-back copies of <paramref name="data"/> (uploaded once, replicated on the device).</summary>
    public RotatedBuffer<T> Rotated<T>(string name, T[] data, int copies)
        where T : unmanaged
    {
        var b = Alloc<T>(name, copies, data.LongLength);
        var first = b.SubView(0, data.LongLength);
        HostCopy.Upload(first, data);
        for (int c = 1; c < copies; c++)
            b.SubView(c * data.LongLength, data.LongLength).CopyFrom(first);
        return new RotatedBuffer<T>(b, data.LongLength, copies);
    }

    /// <summary>
    /// Allocates <paramref name="copies"/> back-to-back copies of a weight matrix in its format's
    /// planes (16-bit values, or quants and scales), as <see cref="Rotated{T}"/> does for one buffer.
    /// </summary>
    public RotatedMatrix Rotated(string name, HostMatrix host, int copies) => host.Format is BlockQuantFormat
        ? new RotatedMatrix(host, null, Rotated(name, host.Quants!, copies), Rotated(name + BlockQuantFormat.ScalesSuffix, host.Scales!, copies))
        : new RotatedMatrix(host, Rotated(name, host.Values!, copies), null, null);

    /// <summary>Allocates and uploads one buffer.</summary>
    public ArrayView<T> Upload<T>(string name, T[] data)
        where T : unmanaged
    {
        var b = Alloc<T>(name, data.LongLength);
        HostCopy.Upload(b, data);
        return b;
    }

    /// <summary>Copies a view to a new host array (synchronously).</summary>
    public static T[] Read<T>(ArrayView<T> view)
        where T : unmanaged
    {
        var a = new T[view.Length];
        HostCopy.Download(view, a);
        return a;
    }

    /// <summary>Deterministic seed of one case from the run's seed and the case's parameters.</summary>
    public int SeedOf(params int[] parts)
    {
        int seed = Seed;
        foreach (int p in parts)
            seed = unchecked(seed * 31 + p);
        return seed & 0x7FFFFFFF;
    }
}

/// <summary>A buffer holding several copies of the same input; <see cref="Copy"/> picks one.</summary>
public sealed class RotatedBuffer<T>(ArrayView<T> buffer, long length, int copies)
    where T : unmanaged
{
    /// <summary>Number of copies.</summary>
    public int Copies { get; } = copies;

    /// <summary>Elements per copy.</summary>
    public long Length { get; } = length;

    /// <summary>Copy <c>i % Copies</c>.</summary>
    public ArrayView<T> Copy(int i) => buffer.SubView(i % Copies * Length, Length);
}

/// <summary>Copies of one weight matrix on the device (see <see cref="BenchContext.Rotated(string, HostMatrix, int)"/>).</summary>
public sealed class RotatedMatrix(HostMatrix host, RotatedBuffer<ushort>? values, RotatedBuffer<byte>? quants, RotatedBuffer<ushort>? scales)
{
    /// <summary>The matrix on the host (the reference computes with it).</summary>
    public HostMatrix Host { get; } = host;

    /// <summary>Copy <paramref name="i"/> mod copies, as the matrix launchers take it.</summary>
    public WeightMatrix Copy(int i) => Host.Format is BlockQuantFormat q
        ? WeightMatrix.Quantized(q, quants!.Copy(i), scales!.Copy(i), Host.Rows, Host.Cols)
        : WeightMatrix.Of((SixteenBitFormat)Host.Format, values!.Copy(i), Host.Rows, Host.Cols);
}
