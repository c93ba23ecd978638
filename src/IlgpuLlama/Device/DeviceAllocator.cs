using System.Runtime.InteropServices;
using ILGPU.Runtime.Cuda;
using ILGPU.Runtime;
using ILGPU;

namespace IlgpuLlama.Device;

/// <summary>Free and total device memory as the driver reports it.</summary>
public readonly record struct DeviceMemoryInfo(long FreeBytes, long TotalBytes);

/// <summary>
/// The only way the engine allocates device memory. Every buffer gets a name, a category, an
/// element type and a shape; each allocation and free is logged; live and peak totals are kept
/// per category so they can be compared with the memory formula byte for byte. On CUDA the
/// driver's free memory (cuMemGetInfo) is read when the allocator is created and on demand, so
/// the report can show device-measured use beside the logged total.
/// </summary>
public sealed class DeviceAllocator : IDisposable
{
    readonly object gate = new();
    readonly Dictionary<long, AllocationInfo> live = new();
    readonly long[] liveBytes = new long[Enum.GetValues<MemoryCategory>().Length];
    long nextId;
    bool disposed;

    /// <summary>Creates an allocator for <paramref name="accelerator"/>.</summary>
    /// <param name="log">receives one line per allocation and free (e.g. the console)</param>
    public DeviceAllocator(Accelerator accelerator, Action<string>? log = null)
    {
        Accelerator = accelerator;
        Log = log;
        Poison = Environment.GetEnvironmentVariable(PoisonVariable) is "1";
    }

    /// <summary>
    /// The environment variable that fills every new buffer with 0xFF bytes (NaN as fp32 and fp16, -1 as
    /// int), so a kernel that reads memory nothing wrote gives NaN every time instead of only when the
    /// allocation happens to reuse dirty memory (compute-sanitizer's initcheck, by other means).
    /// </summary>
    public const string PoisonVariable = "ILGPU_LLAMA_POISON_ALLOCATIONS";

    /// <summary>Whether new buffers are filled with 0xFF bytes (see <see cref="PoisonVariable"/>).</summary>
    public bool Poison { get; }

    /// <summary>The device.</summary>
    public Accelerator Accelerator { get; }

    /// <summary>Where allocation lines go; null for silence.</summary>
    public Action<string>? Log { get; set; }

    /// <summary>Number of allocations so far (aliases included).</summary>
    public long AllocationCount { get; private set; }

    /// <summary>Number of frees so far.</summary>
    public long FreeCount { get; private set; }

    /// <summary>Bytes currently allocated in a category.</summary>
    public long LiveBytes(MemoryCategory category)
    {
        lock (gate)
            return liveBytes[(int)category];
    }

    /// <summary>All live bytes.</summary>
    public long TotalLiveBytes
    {
        get
        {
            lock (gate)
                return liveBytes.Sum();
        }
    }

    /// <summary>Live allocations in allocation order.</summary>
    public IReadOnlyList<AllocationInfo> LiveAllocations
    {
        get
        {
            lock (gate)
                return live.Values.OrderBy(a => a.Id).ToList();
        }
    }

    /// <summary>Free/total device memory from the driver, or null where the device has no such query (CPU).</summary>
    public DeviceMemoryInfo? QueryDeviceMemory()
    {
        if (Accelerator is CudaAccelerator)
        {
            Accelerator.Bind();
            if (CudaAPI.CurrentAPI.GetMemoryInfo(out long free, out long total) == CudaError.CUDA_SUCCESS)
                return new DeviceMemoryInfo(free, total);
        }
        return null;
    }

    /// <summary>Allocates a buffer of <c>product(shape)</c> elements.</summary>
    public DeviceBuffer<T> Allocate<T>(string name, MemoryCategory category, params long[] shape)
        where T : unmanaged
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        long length = 1;
        foreach (long d in shape)
        {
            if (d < 0)
                throw new ArgumentException($"{name}: negative dimension in shape [{string.Join(", ", shape)}]");
            length = checked(length * d);
        }
        long bytes = checked(length * Marshal.SizeOf<T>());
        MemoryBuffer1D<T, Stride1D.Dense> buffer;
        try
        {
            // A zero-length request still gets a real (1-element) buffer so its view is valid; it is counted as 0 bytes.
            buffer = Accelerator.Allocate1D<T>(Math.Max(1, length));
            if (Poison)
            {
                buffer.View.MemSet(0xFF);
                Accelerator.Synchronize();
            }
        }
        catch (Exception e) when (IsOutOfMemory(e))
        {
            var mem = QueryDeviceMemory();
            string free = mem is { } m ? $"{Gb(m.FreeBytes)} free of {Gb(m.TotalBytes)}" : "not enough free";
            throw new DeviceOutOfMemoryException(
                $"out of device memory allocating {name} ({bytes:N0} B) with {Gb(TotalLiveBytes)} already allocated; the device has {free}: " +
                $"reduce {EngineParameters.MaxBatchSize} or {EngineParameters.MaxSeqLen}, or use a device with more memory", e);
        }
        var info = new AllocationInfo(Interlocked.Increment(ref nextId), name, category, typeof(T).Name, shape, bytes, null);
        Track(info);
        return new DeviceBuffer<T>(this, info, buffer, buffer.View.SubView(0, length));
    }

    /// <summary>
    /// Registers a second name for an existing buffer (a tied lm_head is the embedding): logged,
    /// 0 bytes, so totals still equal the formula that counts tied weights once.
    /// </summary>
    public DeviceBuffer<T> Alias<T>(string name, DeviceBuffer<T> target)
        where T : unmanaged
    {
        var info = new AllocationInfo(Interlocked.Increment(ref nextId), name, target.Info.Category, typeof(T).Name, target.Info.Shape, 0, target.Name);
        Track(info);
        return new DeviceBuffer<T>(this, info, null, target.View);
    }

    void Track(AllocationInfo info)
    {
        lock (gate)
        {
            live[info.Id] = info;
            int c = (int)info.Category;
            liveBytes[c] += info.Bytes;
            AllocationCount++;
        }
        Log?.Invoke(info.AliasOf is null
            ? $"alloc #{info.Id} {info.Name} {info.Category} {info.ElementType}{info.ShapeText} {info.Bytes:N0} B"
            : $"alias #{info.Id} {info.Name} -> {info.AliasOf} {info.Category} {info.ElementType}{info.ShapeText} 0 B");
    }

    internal void Release(AllocationInfo info)
    {
        lock (gate)
        {
            if (!live.Remove(info.Id))
                return;
            liveBytes[(int)info.Category] -= info.Bytes;
            FreeCount++;
        }
        Log?.Invoke($"free  #{info.Id} {info.Name} {info.Bytes:N0} B");
    }

    static bool IsOutOfMemory(Exception e) =>
        e is OutOfMemoryException ||
        (e is CudaException ce && (ce.Error?.Contains("OUT_OF_MEMORY", StringComparison.Ordinal) ?? false)) ||
        e.InnerException is { } inner && IsOutOfMemory(inner);

    /// <summary>Formats bytes in decimal units (GB = 10^9 B) with a unit that keeps small models readable.</summary>
    public static string Gb(long bytes) => bytes >= 1_000_000_000 ? $"{bytes / 1e9:F2} GB" : bytes >= 1_000_000 ? $"{bytes / 1e6:F2} MB" : $"{bytes / 1e3:F1} KB";

    /// <summary>Reports buffers still alive (a leak unless the process is ending) to the log.</summary>
    public void Dispose()
    {
        if (disposed)
            return;
        disposed = true;
        var leaked = LiveAllocations;
        if (leaked.Count > 0)
        {
            Log?.Invoke($"allocator disposed with {leaked.Count} buffers still alive ({TotalLiveBytes:N0} B):");
            foreach (var a in leaked.Take(20))
                Log?.Invoke($"  live #{a.Id} {a.Name} {a.Bytes:N0} B");
        }
    }
}
