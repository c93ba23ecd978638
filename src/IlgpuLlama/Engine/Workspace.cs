using ILGPU;
using ILGPU.Runtime;
using IlgpuLlama.Device;
using IlgpuLlama.Model;

namespace IlgpuLlama.Engine;

/// <summary>
/// The activation workspace and the KV cache on the device: exactly the buffers of a
/// <see cref="WorkspacePlan"/>, each allocated once at load through the tracking allocator, so
/// the allocator's totals are the plan's (and the memory formula's) by construction.
/// </summary>
public sealed class Workspace : IDisposable
{
    readonly Dictionary<BufferSpec, IDisposable> buffers = [];

    /// <summary>Allocates every buffer of <paramref name="plan"/>; completion counters and penalty flags start at zero.</summary>
    public Workspace(DeviceAllocator allocator, WorkspacePlan plan)
    {
        Plan = plan;
        try
        {
            foreach (var spec in plan.Buffers)
                buffers[spec] = spec.Allocate(allocator);
            // The kernels leave their completion counters at zero after each launch; they must start there.
            this[plan.AttentionCounters].MemSetToZero();
            this[plan.PersistentSync].MemSetToZero();
            this[plan.ReduceCounters].MemSetToZero();
            this[plan.TopKCounters].MemSetToZero();
            this[plan.Seen].MemSetToZero();
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>The buffers and sizes.</summary>
    public WorkspacePlan Plan { get; }

    /// <summary>The view of an fp32 buffer of the plan.</summary>
    public ArrayView<float> this[BufferSpec<float> spec] => Buffer(spec).View;

    /// <summary>The view of an int32 buffer of the plan.</summary>
    public ArrayView<int> this[BufferSpec<int> spec] => Buffer(spec).View;

    /// <summary>The view of an fp16 (KV cache) buffer of the plan.</summary>
    public ArrayView<ushort> this[BufferSpec<ushort> spec] => Buffer(spec).View;

    /// <summary>The view of a byte buffer of the plan.</summary>
    public ArrayView<byte> this[BufferSpec<byte> spec] => Buffer(spec).View;

    /// <summary>The device buffer of a buffer of the plan.</summary>
    public DeviceBuffer<T> Buffer<T>(BufferSpec<T> spec)
        where T : unmanaged => (DeviceBuffer<T>)buffers[spec];

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var d in buffers.Values)
            d.Dispose();
        buffers.Clear();
    }
}
