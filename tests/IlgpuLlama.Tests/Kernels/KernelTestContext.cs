using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using IlgpuLlama.Device;
using IlgpuLlama.Kernels;
using IlgpuLlama.Kernels.Reference;

namespace IlgpuLlama.Tests.Kernels;

/// <summary>
/// CPU accelerators shared by the kernel tests: most tests run at warp 4 (fast on the CPU
/// accelerator, which runs one OS thread per emulated thread), a few at warp 32 to run the
/// shuffle reductions at GPU width, at warp 2, and at warp 1 (the engine's own CPU device: groups
/// of one lane). Group sizes come from KernelTuning clamped to each device.
/// </summary>
public sealed class KernelTestContext : IDisposable
{
    readonly Dictionary<int, LlamaKernels> kernels = new();

    public KernelTestContext()
    {
        Context = Context.Create(b => b.CPU(new CPUDevice(4, 4, 2)).CPU(new CPUDevice(32, 2, 1)).CPU(new CPUDevice(2, 1, 2)).CPU(ComputeDevice.SingleLaneDevice(2)!).EnableAlgorithms().Optimize(OptimizationLevel.O1));
        var cpus = Context.GetCPUDevices();
        Warp4 = cpus[0].CreateCPUAccelerator(Context);
        Warp32 = cpus[1].CreateCPUAccelerator(Context);
        Warp2 = cpus[2].CreateCPUAccelerator(Context);
        Warp1 = cpus[3].CreateCPUAccelerator(Context);
    }

    public Context Context { get; }
    public Accelerator Warp4 { get; }
    public Accelerator Warp32 { get; }

    /// <summary>Warps of 2, one warp per group (groups narrower than a batch of 4).</summary>
    public Accelerator Warp2 { get; }

    /// <summary>The engine's own CPU device (<see cref="ComputeDevice.EngineCpuDevice"/>): one-lane warps, one per group, so no shuffle runs.</summary>
    public Accelerator Warp1 { get; }

    public Accelerator For(int warp) => warp switch { 32 => Warp32, 2 => Warp2, 1 => Warp1, _ => Warp4 };

    /// <summary>Kernels for a warp size, with a small attention chunk so tests exercise splits.</summary>
    public LlamaKernels Kernels(int warp)
    {
        lock (kernels)
        {
            if (!kernels.TryGetValue(warp, out var k))
            {
                var acc = For(warp);
                var tuning = KernelTuning.For(acc) with { AttentionMinChunk = 3, TopKSlice = 256, LogitsSlice = 200 };
                k = new LlamaKernels(acc, tuning);
                kernels[warp] = k;
            }
            return k;
        }
    }

    public void Dispose()
    {
        Warp4.Dispose();
        Warp32.Dispose();
        Warp2.Dispose();
        Warp1.Dispose();
        Context.Dispose();
    }
}

[CollectionDefinition(Name)]
public sealed class KernelCollection : ICollectionFixture<KernelTestContext>
{
    public const string Name = "kernels";
}

/// <summary>Deterministic random data and comparison helpers for kernel tests.</summary>
public static class TestData
{
    public static float[] Floats(Random rng, int n, double scale = 1.0)
    {
        var a = new float[n];
        for (int i = 0; i < n; i++)
            a[i] = (float)((rng.NextDouble() * 2 - 1) * scale);
        return a;
    }

    /// <summary>A 16-bit weight format by name ("fp16", "bf16"), for [InlineData] cases.</summary>
    public static SixteenBitFormat Format(string name) => (SixteenBitFormat)WeightFormat.Parse(name);

    public static ushort[] Weights(Random rng, int n, SixteenBitFormat format, double scale = 0.5)
    {
        var a = new ushort[n];
        for (int i = 0; i < n; i++)
            a[i] = format.Encode((rng.NextDouble() * 2 - 1) * scale);
        return a;
    }

    public static ushort[] HalfBits(Random rng, int n, double scale = 1.0)
    {
        var a = new ushort[n];
        for (int i = 0; i < n; i++)
            a[i] = KernelReference.ToHalfBits((rng.NextDouble() * 2 - 1) * scale);
        return a;
    }

    /// <summary>A KV cache of <paramref name="values"/> random values in [-scale, scale] stored in <paramref name="layout"/>'s type (16-bit words).</summary>
    public static ushort[] KvCache(Random rng, long values, KvCacheLayout layout, double scale = 1.0)
    {
        var words = new ushort[values * layout.Words];
        for (int i = 0; i < values; i++)
            KernelReference.StoreKv(words, i, (rng.NextDouble() * 2 - 1) * scale, layout);
        return words;
    }

    /// <summary>The values of a KV cache of 16-bit words in <paramref name="layout"/>'s type.</summary>
    public static double[] KvValues(ushort[] words, KvCacheLayout layout) =>
        Enumerable.Range(0, words.Length / layout.Words).Select(i => KernelReference.KvValue(words, i, layout)).ToArray();

    public static double[] HalfToDouble(ushort[] bits) => Array.ConvertAll(bits, KernelReference.HalfToDouble);

    public static void AssertClose(string what, float[] actual, double[] expected, double abs, double rel)
    {
        var c = Comparison.Check(what, actual, expected, abs, rel);
        Assert.True(c.Passed, c.Report);
    }

    /// <summary>Llama 3 inverse frequencies (rotate_half, "llama3" scaling) for test tables.</summary>
    public static double[] Llama3InverseFrequencies(int headDim, double theta, double factor, double low, double high, int original)
    {
        int half = headDim / 2;
        var inv = new double[half];
        double lowWavelen = original / low;
        double highWavelen = original / high;
        for (int i = 0; i < half; i++)
        {
            double f = 1.0 / Math.Pow(theta, 2.0 * i / headDim);
            double wavelen = 2 * Math.PI / f;
            if (wavelen > lowWavelen)
                f /= factor;
            else if (wavelen >= highWavelen)
            {
                double smooth = (original / wavelen - low) / (high - low);
                f = (1 - smooth) * f / factor + smooth * f;
            }
            inv[i] = f;
        }
        return inv;
    }
}
