using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;

namespace IlgpuLlama.IO;

/// <summary>
/// Temporary files and directories of writes in progress. Each is deleted when its write ends
/// (successfully or not), and every one still registered is deleted when the process is interrupted
/// (Ctrl-C, SIGTERM, SIGHUP, SIGQUIT) or exits, so no half-written output is left behind.
/// </summary>
/// <remarks>
/// A signal's handler runs on its own thread while the writer goes on, so three things make the
/// deletion stick (a `.demo-` directory was left under load when they were missing): after SIGTERM,
/// SIGHUP or the process exit no new temporary can be created (<see cref="CreateDirectory"/> and
/// <see cref="CreateFile"/> refuse), a directory the writer is still filling is deleted again until it
/// is gone (a file created during the recursive delete made it fail with "directory not empty"), and a
/// path stays registered until its writer lets go, so the exit handler deletes it once more.
/// A long write that can stop cleanly (quantize) uses <see cref="CancelOnSignals"/> instead: the
/// signal cancels it and its own failure path removes its temporaries.
/// </remarks>
public static class TemporaryPaths
{
    static readonly ConcurrentDictionary<string, byte> Live = new();
    static readonly Lock Gate = new();
    static List<PosixSignalRegistration>? _signals;
    static bool _closing;
    static SignalScope? _scope;

    /// <summary>How long a <see cref="CancelOnSignals"/> scope has to stop after a signal before the process ends anyway.</summary>
    public static TimeSpan StopTimeout { get; } = TimeSpan.FromSeconds(15);

    /// <summary>Paths registered now (for tests).</summary>
    public static IReadOnlyCollection<string> Registered => Live.Keys.ToArray();

    /// <summary>Registers <paramref name="path"/> for deletion on interruption; disposing the result unregisters it (it does not delete it).</summary>
    /// <exception cref="OperationCanceledException">The process is ending (a signal or the exit arrived).</exception>
    public static IDisposable Register(string path)
    {
        EnsureHandlers();
        string full = Path.GetFullPath(path);
        lock (Gate)
        {
            ThrowIfClosing();
            Live[full] = 0;
        }
        return new Registration(full);
    }

    /// <summary>Creates a registered temporary directory, unless the process is ending (then nothing is created).</summary>
    /// <exception cref="OperationCanceledException">The process is ending.</exception>
    public static void CreateDirectory(string path)
    {
        lock (Gate)
        {
            ThrowIfClosing();
            Directory.CreateDirectory(path);
        }
    }

    /// <summary>Creates a registered temporary file (it must not exist), unless the process is ending (then nothing is created).</summary>
    /// <exception cref="OperationCanceledException">The process is ending.</exception>
    public static FileStream CreateFile(string path, FileAccess access = FileAccess.Write, int bufferSize = 4096)
    {
        lock (Gate)
        {
            ThrowIfClosing();
            return new FileStream(path, FileMode.CreateNew, access, FileShare.None, bufferSize);
        }
    }

    static void ThrowIfClosing()
    {
        if (_closing)
            throw new OperationCanceledException("the process is ending (interrupted); nothing more is written");
    }

    /// <summary>Deletes a file or directory tree if it exists, ignoring failures (it is a best effort on the way out).</summary>
    /// <remarks>A directory another thread is still writing into is deleted again until it is gone (for up to half a second).</remarks>
    public static void Delete(string path)
    {
        for (int attempt = 0; ; attempt++)
        {
            try
            {
                if (Directory.Exists(path))
                    Directory.Delete(path, recursive: true);
                else if (File.Exists(path))
                    File.Delete(path);
                return;
            }
            catch (DirectoryNotFoundException)
            {
                return;
            }
            catch (IOException) when (attempt < 200 && Directory.Exists(path))
            {
                // "Directory not empty": a file appeared while the tree was being deleted. Try again at once
                // (waiting would let a busy writer add more), then more slowly.
                Thread.Sleep(attempt < 100 ? 0 : 5);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                return;
            }
        }
    }

    /// <summary>
    /// Deletes every registered path and refuses new ones (the signal and exit handlers call this):
    /// the process is ending. Paths stay registered until their writers dispose them.
    /// </summary>
    public static void DeleteAll()
    {
        lock (Gate)
            _closing = true;
        foreach (string path in Live.Keys)
            Delete(path);
    }

    /// <summary>
    /// Until the result is disposed, SIGINT, SIGTERM, SIGHUP and SIGQUIT do not end the process: the
    /// first cancels <paramref name="source"/>, whose work then removes its own temporaries and
    /// returns; the command exits with <see cref="SignalScope.ExitCode"/>. A second signal, or the
    /// work not stopping within <see cref="StopTimeout"/>, ends the process as without the scope
    /// (every registered path deleted).
    /// </summary>
    public static SignalScope CancelOnSignals(CancellationTokenSource source)
    {
        ArgumentNullException.ThrowIfNull(source);
        EnsureHandlers();
        var scope = new SignalScope(source);
        lock (Gate)
            _scope = scope;
        return scope;
    }

    /// <summary>A stretch of work that a signal cancels instead of ending the process (<see cref="CancelOnSignals"/>).</summary>
    public sealed class SignalScope : IDisposable
    {
        readonly CancellationTokenSource source;
        readonly Lock gate = new();
        Timer? watchdog;
        int disposed;

        internal SignalScope(CancellationTokenSource source) => this.source = source;

        /// <summary>The signal that cancelled the work, or null.</summary>
        public PosixSignal? Signal { get; private set; }

        /// <summary>The signal's name (SIGTERM), or null.</summary>
        public string? SignalName => Signal?.ToString();

        /// <summary>The exit status of a process ended by the signal: 128 + its number (130 for SIGINT, 143 for SIGTERM); 130 without one.</summary>
        public int ExitCode => 128 + Signal switch
        {
            PosixSignal.SIGHUP => 1,
            PosixSignal.SIGQUIT => 3,
            PosixSignal.SIGTERM => 15,
            _ => 2,
        };

        /// <summary>Takes the first signal (true: the default action is cancelled); false once one was taken or the scope ended.</summary>
        internal bool TryTake(PosixSignal signal)
        {
            lock (gate)
            {
                if (Signal is not null || Volatile.Read(ref disposed) != 0)
                    return false;
                Signal = signal;
                watchdog = new Timer(_ =>
                {
                    if (Volatile.Read(ref disposed) != 0)
                        return;
                    DeleteAll();
                    Environment.Exit(ExitCode);
                }, null, StopTimeout, Timeout.InfiniteTimeSpan);
            }
            source.Cancel();
            return true;
        }

        /// <summary>Ends the scope: signals end the process again.</summary>
        public void Dispose()
        {
            if (Interlocked.Exchange(ref disposed, 1) != 0)
                return;
            lock (gate)
                watchdog?.Dispose();
            lock (Gate)
            {
                if (ReferenceEquals(_scope, this))
                    _scope = null;
            }
        }
    }

    /// <summary>
    /// Removes temporary directories in <paramref name="directory"/> whose names match <paramref name="pattern"/>
    /// (its group "pid" the process that made them) left by a process that no longer runs (SIGKILL,
    /// power loss). A temporary of a running process, or of this one, is left alone; failures are ignored.
    /// </summary>
    public static void RemoveStale(string directory, Regex pattern)
    {
        IEnumerable<string> entries;
        try
        {
            entries = Directory.EnumerateDirectories(directory, ".*").ToList();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return;
        }
        foreach (string entry in entries)
        {
            var m = pattern.Match(Path.GetFileName(entry));
            if (!m.Success || !int.TryParse(m.Groups["pid"].Value, out int pid) || pid == Environment.ProcessId || IsRunning(pid))
                continue;
            Delete(entry);
        }
    }

    /// <summary>True when a process with id <paramref name="pid"/> exists.</summary>
    public static bool IsRunning(int pid)
    {
        if (pid <= 0)
            return false;
        try
        {
            using var p = System.Diagnostics.Process.GetProcessById(pid);
            return !p.HasExited;
        }
        catch (ArgumentException)
        {
            return false;
        }
        catch (InvalidOperationException)
        {
            return false;
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
                    _signals.Add(PosixSignalRegistration.Create(signal, OnSignal));
                }
                catch (PlatformNotSupportedException)
                {
                }
            }
            AppDomain.CurrentDomain.ProcessExit += (_, _) => DeleteAll();
        }
    }

    static void OnSignal(PosixSignalContext context)
    {
        SignalScope? scope;
        lock (Gate)
            scope = _scope;
        if (scope is not null && scope.TryTake(context.Signal))
        {
            context.Cancel = true;
            return;
        }
        if (context.Signal is PosixSignal.SIGINT or PosixSignal.SIGQUIT)
        {
            // Ctrl-C may be taken by the console (chat goes on), so the process may not end: delete, keep working.
            foreach (string path in Live.Keys)
                Delete(path);
            return;
        }
        // Not cancelled here: the process still ends as it would have.
        DeleteAll();
    }

    sealed class Registration(string path) : IDisposable
    {
        public void Dispose() => Live.TryRemove(path, out _);
    }
}
