using System.Collections.Concurrent;
using System.Runtime.InteropServices;

namespace IlgpuLlama.IO;

/// <summary>
/// Temporary files and directories of writes in progress. Each is deleted when its write ends
/// (successfully or not), and every one still registered is deleted when the process is interrupted
/// (Ctrl-C, SIGTERM, SIGHUP, SIGQUIT) or exits, so no half-written output is left behind.
/// </summary>
public static class TemporaryPaths
{
    static readonly ConcurrentDictionary<string, byte> Live = new();
    static readonly object Gate = new();
    static List<PosixSignalRegistration>? _signals;

    /// <summary>Paths registered now (for tests).</summary>
    public static IReadOnlyCollection<string> Registered => Live.Keys.ToArray();

    /// <summary>Registers <paramref name="path"/> for deletion on interruption; disposing the result unregisters it (it does not delete it).</summary>
    public static IDisposable Register(string path)
    {
        EnsureHandlers();
        string full = Path.GetFullPath(path);
        Live[full] = 0;
        return new Registration(full);
    }

    /// <summary>Deletes a file or directory tree if it exists, ignoring failures (it is a best effort on the way out).</summary>
    public static void Delete(string path)
    {
        try
        {
            if (Directory.Exists(path))
                Directory.Delete(path, recursive: true);
            else if (File.Exists(path))
                File.Delete(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }

    /// <summary>Deletes every registered path (the signal and exit handlers call this).</summary>
    public static void DeleteAll()
    {
        foreach (string path in Live.Keys)
        {
            Delete(path);
            Live.TryRemove(path, out _);
        }
    }

    static void EnsureHandlers()
    {
        lock (Gate)
        {
            if (_signals is not null)
                return;
            _signals = [];
            foreach (var signal in new[] { PosixSignal.SIGINT, PosixSignal.SIGTERM, PosixSignal.SIGHUP, PosixSignal.SIGQUIT })
            {
                try
                {
                    // The handler does not cancel the signal: the process still ends as it would have.
                    _signals.Add(PosixSignalRegistration.Create(signal, _ => DeleteAll()));
                }
                catch (PlatformNotSupportedException)
                {
                }
            }
            AppDomain.CurrentDomain.ProcessExit += (_, _) => DeleteAll();
        }
    }

    sealed class Registration(string path) : IDisposable
    {
        public void Dispose() => Live.TryRemove(path, out _);
    }
}
