using ILGPU.Runtime;
using ILGPU;
using IlgpuLlama.Kernels;

namespace IlgpuLlama.Device;

/// <summary>Everything the allocator knows about one buffer.</summary>
/// <param name="Id">allocation sequence number</param>
/// <param name="Name">safetensors key for weights (model.layers.3.mlp.up_proj.weight), kv_cache.k.layerN, act.*</param>
/// <param name="Category">what the buffer holds</param>
/// <param name="ElementType">element type name (ushort holds 16-bit floats)</param>
/// <param name="Shape">logical shape</param>
/// <param name="Bytes">bytes on the device (0 for an alias)</param>
/// <param name="AliasOf">the buffer this one shares storage with, if any</param>
public sealed record AllocationInfo(long Id, string Name, MemoryCategory Category, string ElementType, IReadOnlyList<long> Shape, long Bytes, string? AliasOf)
{
    /// <summary>Shape as "[a, b]".</summary>
    public string ShapeText => "[" + string.Join(", ", Shape) + "]";
}

/// <summary>A device buffer owned by a <see cref="DeviceAllocator"/>. Disposing it frees it and logs the free.</summary>
public sealed class DeviceBuffer<T> : IDisposable
    where T : unmanaged
{
    readonly DeviceAllocator? owner;
    MemoryBuffer1D<T, Stride1D.Dense>? buffer;

    internal DeviceBuffer(DeviceAllocator owner, AllocationInfo info, MemoryBuffer1D<T, Stride1D.Dense>? buffer, ArrayView<T> view)
    {
        this.owner = owner;
        Info = info;
        this.buffer = buffer;
        View = view;
    }

    /// <summary>The allocation record.</summary>
    public AllocationInfo Info { get; }

    /// <summary>Name given at allocation.</summary>
    public string Name => Info.Name;

    /// <summary>Number of elements.</summary>
    public long Length => View.Length;

    /// <summary>The whole buffer as a view.</summary>
    public ArrayView<T> View { get; private set; }

    /// <summary>True for an alias (shares another buffer's storage).</summary>
    public bool IsAlias => Info.AliasOf is not null;

    /// <summary>Copies the buffer to a new host array (synchronously).</summary>
    public T[] ToArray()
    {
        var a = new T[Length];
        HostCopy.Download(View, a);
        return a;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (View.IsValid)
        {
            owner?.Release(Info);
            buffer?.Dispose();
            buffer = null;
            View = default;
        }
    }
}
