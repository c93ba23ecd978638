namespace IlgpuLlama.Device;

/// <summary>
/// Recorded launch graphs by key, at most <see cref="Capacity"/> of them: recording one more
/// disposes the least recently launched. The key must describe the shape of the recorded work
/// only (batch width, which kernels run, their sizes); values that change between steps live in
/// device memory. The engine's keys are batch width x greedy x penalty x candidates rounded to a
/// power of two, so a server meets a bounded set, and the capacity keeps the memory bounded whatever
/// the mix (a key evicted and met again is recorded again: one capture, never a wrong step).
/// </summary>
public sealed class LaunchGraphCache<TKey> : IDisposable
    where TKey : notnull
{
    readonly Dictionary<TKey, LinkedListNode<(TKey Key, ILaunchGraph Graph)>> byKey = new();
    readonly LinkedList<(TKey Key, ILaunchGraph Graph)> byUse = new(); // most recently used first

    /// <summary>A cache of at most <paramref name="capacity"/> graphs (at least 1).</summary>
    public LaunchGraphCache(int capacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        Capacity = capacity;
    }

    /// <summary>Most graphs held at once.</summary>
    public int Capacity { get; }

    /// <summary>Graphs held now.</summary>
    public int Count => byKey.Count;

    /// <summary>Graphs recorded so far (evicted ones included).</summary>
    public int Recorded { get; private set; }

    /// <summary>Graphs disposed to make room.</summary>
    public int Evicted { get; private set; }

    /// <summary>
    /// The graph of <paramref name="key"/>, recorded by <paramref name="record"/> if it is not held
    /// (evicting the least recently used one when full); it becomes the most recently used.
    /// </summary>
    public ILaunchGraph GetOrRecord(TKey key, Func<ILaunchGraph> record)
    {
        if (byKey.TryGetValue(key, out var node))
        {
            byUse.Remove(node);
            byUse.AddFirst(node);
            return node.Value.Graph;
        }
        var graph = record();
        Recorded++;
        if (byKey.Count == Capacity)
        {
            var last = byUse.Last!;
            byUse.RemoveLast();
            byKey.Remove(last.Value.Key);
            last.Value.Graph.Dispose();
            Evicted++;
        }
        byKey[key] = byUse.AddFirst((key, graph));
        return graph;
    }

    /// <summary>Whether a graph for <paramref name="key"/> is held (does not change the order).</summary>
    public bool Contains(TKey key) => byKey.ContainsKey(key);

    /// <summary>Disposes every graph held.</summary>
    public void Dispose()
    {
        foreach (var (_, graph) in byUse)
            graph.Dispose();
        byUse.Clear();
        byKey.Clear();
    }
}
