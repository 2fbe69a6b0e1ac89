"""The estimators' shared docstrings: every parameter and fitted attribute both take."""

# Shared by both estimators' docstrings (each class documents every parameter it takes).
PARAMETERS_DOC = """dim : int or "auto", default=15
        Size of the matrices. Cost grows like dim**3 per sample. "auto" is 45
        on CUDA and 15 on the CPU (recorded as ``dim_``); the defaults were
        measured with 15 on both.
    eigval_idx : int or None, default=None
        Which eigenvalue (ascending; negative counts from the largest).
        None means ``dim // 2``. Must lie in [-dim, dim).
    device : {"auto", "cpu", "cuda", "cuda:N"} or torch.device, default="auto"
        "auto" is CUDA when available, else CPU. Recorded as ``device_``.
    backend : {"auto", "torch", "cupy", "kernel", "numba"}, default="auto"
        Eigen backend (see :func:`skspectral.kth_eigvalsh`): "torch"
        (torch.linalg, any device), "cupy" (CuPy's batched cuSOLVER solver,
        CUDA), "kernel" (our fused k-th eigenpair kernel, CUDA, dim <= 64;
        its training steps replay from a CUDA graph), "numba" (the same
        algorithm on the CPU, compiled with Numba). "auto" picks the fastest
        available; recorded as ``backend_``.
    dtype : {"auto", "float32", "float64"}, default="auto"
        Training precision; "auto" is float32 on CUDA and where the CPU runs
        its compiled kernels (backend "numba", no smoothing: twice as many
        float32 matrices per SIMD vector, the suite's scores those of float64
        to about 1e-4), else float64. "float64" for results to float64
        rounding. Recorded as ``dtype_``.
    learning_rate_init : float, default=0.002
        Adam's initial step size (at 200 rows a step; see batch_size).
    learning_rate_schedule : {"cosine", "constant"}, default="cosine"
        "cosine" anneals the step size to 0 over max_iter epochs (each fit
        call), which averages out mini-batch noise at the end; "constant"
        keeps it fixed.
    batch_size : int or "auto", default="auto"
        Rows per step. "auto" is 200 rows (at most the training rows), or on
        tall data (over 40,000 training rows) as many as keep an epoch to 200
        steps; Adam's step size then grows with the square root of the batch
        (``learning_rate_init`` is the step size at 200 rows). In a Dask fit,
        the global batch. Where the rows leave a last batch of fewer than a
        tenth of batch_size rows, an epoch leaves it out (its rows are drawn
        anew each epoch): one step on a handful of rows at the step size of
        whole batches would throw the fit off.
    max_iter : int or "auto", default="auto"
        Maximum number of epochs (the cosine schedule's length). "auto": 140,
        and on the CPU 60 from 100,000 fit rows, where one member's early
        stop came at 50-82 epochs with the step size still high: annealed
        over 60 epochs it scored as well or better (flights: RMSE -0.2 to
        -0.4 %) in a bounded time. Recorded as ``max_iter_``.
    shuffle : bool, default=True
        Shuffle the rows every epoch (on the device).
    random_state : int, RandomState or None, default=None
        Seeds the initial model, the shuffling and the validation split.
    tol : float, default=1e-4
        Improvement of the training loss (or validation score with
        early_stopping) below which an epoch counts as no improvement, in
        the training loss's units (the regressor's: y standardised, or over
        its mean for a log link; R^2 for the squared error), so a fit stops
        at the same epoch whatever y's units. With the cosine schedule the
        training loss never stops a fit early (the schedule sets its
        length); the validation score does.
    early_stopping : bool or "auto", default="auto"
        Hold out ``validation_fraction`` of the rows, stop when their score
        stops improving and keep the best model. "auto": on from 1000
        training rows, for a regressor from 300 (recorded as
        ``early_stopping_``). The model scored
        (and kept) at each epoch is the running average of the epochs' last
        parameters (half the last epoch's, half the average before it): late
        in a fit its score is better and steadier than the last parameters'.
        It is a parameter vector of the same model, so every guarantee of
        the model (ordered mu, ``monotonic_cst``, the certified bounds) holds.
    validation_fraction : float, default=0.1
        Share of the rows held out with early_stopping.
    refit : "auto" or bool, default="auto"
        With early stopping, once the held-out rows have chosen the epoch
        (the best-scoring one), the model kept goes on training on every row,
        the held-out ones too, for half as many epochs again (rounded up),
        from the step size the schedule gave as many epochs before the chosen
        one down to 0 (the schedule's last stretch replayed on every row);
        its last parameters are kept. The held-out rows then also teach the
        model: on the report folds every table's error fell or stayed within
        0.1 % (concrete 4 %, diamonds 2 %, churn and hpc 2-3 %, California 1 %
        on the CPU) for 1.2-1.5x the fit time (benchmarks/RESULTS.md, section
        12). "auto": under 100,000 rows (a tall table gains ~1 % for 1.5x
        its fit), but not where the fit
        calibrates quantiles on the held-out rows (``calibrate_quantiles``
        True, or "auto" from 1,000 held-out rows); recorded as ``refit_``.
        ``history_``, ``n_iter_`` and the validation scores stay those of the
        selecting fit; ``refit_epochs_`` is the refit's length. No effect
        without early stopping, in partial_fit or in a warm start that
        continues the fitted model; a fit_iter consumer or a callback that
        stops the fit early keeps the selecting fit's model.
    n_iter_no_change : int or "auto", default="auto"
        Epochs without improvement before stopping. "auto": 10, or 5 with
        early stopping on 1000 validation rows or more (a steadier score:
        a plateau is called sooner; on a GPU, where an epoch is cheap, only
        from 10,000 validation rows) -- but 10 for several quantile levels,
        whose mean pinball loss is not steady whatever the rows. Under 100
        validation rows, whose score jumps from epoch to epoch, "auto" never
        stops early: the fit runs max_iter epochs and keeps the best one.
    spectral_penalty : float, default=0.0
        ``spectral_penalty * sum_i ||A_i||_2`` is added to the loss: shrinks the
        certified sensitivities directly.
    verbose : bool, default=False
        Print one line per epoch.
    warm_start : bool, default=False
        Continue from the previous fit instead of starting anew (the model's
        shape -- dim, n_estimators, the encoding, structure, ... -- must not
        have changed; the column statistics of the first fit are kept).
        Without early stopping (and in partial_fit) the continued model is
        the last epoch's; with it, the best-scoring epoch of this call or of
        an earlier one, as MLPRegressor's -- but after a refit only this
        call's epochs count (no held-out row scored the refit's model).
    clip_features : bool, default=True
        In predict, clip each feature to the range seen in fit, so that an
        extreme value (California's AveOccup reaches 1243) cannot push the
        prediction far beyond anything seen in training. Clipping is
        1-Lipschitz, so the certified sensitivity bound still holds.
    categorical_features : "from_dtype", array-like of int, str or bool, or None, default="from_dtype"
        Categorical input columns, as HistGradientBoosting's: "from_dtype"
        takes the DataFrame columns of categorical, object, string or bool
        dtype; else indices, names or a boolean mask. Each level of a
        categorical feature owns a learned matrix; levels seen in fewer than
        ``min_level_count`` training rows and unseen levels share an "other"
        matrix, and a missing value has its own where one was seen. No
        encoder needed. At
        predict a categorical column must hold values of the kind it held in
        fit (strings, or numbers): another kind is an error, not a column of
        unseen levels.
    min_level_count : int or "auto", default="auto"
        Fit rows a categorical level needs to own a matrix (as
        OneHotEncoder's ``min_frequency``, LightGBM's ``min_data_per_group``);
        rarer levels share their feature's "other" matrix with unseen ones.
        "auto": 2.5 % of the fit's rows, at least 10 and at most 100 (100
        from 4,000 rows). Counted on every fit row, before the
        early-stopping split.
    gated_columns : int or "auto", default="auto"
        At most this many gated copies of numeric columns: a copy of numeric
        column j that acts only where a categorical column of 2 to 4 levels
        holds one level (its own piecewise-linear path on j's bins there, 0
        elsewhere), as a tree splits on the level and then on j. A fit makes
        the copies its target asks for, read before training: the level's
        interaction with j's bins, an F statistic above 12 (largest first).
        "auto": at most 4; 0: none. Piecewise-linear encoding only; numeric
        columns without missing values in fit; none from 100,000 fit rows
        (their cost on a tall table outweighed their gain). Sensitivities stay per input
        column (a copy's bound counts towards j and the categorical column).
    feature_encoding : {"linear", "piecewise_linear"}, default="piecewise_linear"
        Numeric features enter the matrix as x_i A_i ("linear", the series'
        model) or through a piecewise-linear encoding on quantile bins,
        sum_t e_t(x_i) A_{i,t} (a continuous piecewise-linear path of matrices
        per feature). A numeric feature with missing values in fit also gets a
        matrix for "missing"; missing values are allowed in any feature. A
        missing value at predict in a feature that had none in fit is taken as
        that feature's training median (where most training rows lie, as
        HistGradientBoosting sends it to the child holding most rows). A
        feature that holds a single value (or none) in fit carries nothing:
        it gets no matrix, contributes nothing and reports zero sensitivity;
        fit warns which features these are.
    n_bins : int or "auto", default="auto"
        Quantile bins per numeric feature with feature_encoding="piecewise_linear"
        (fewer where a feature has fewer distinct values). "auto": 16, and 32
        from 10,000 fit rows (duplicate rows merged): more accurate on tall
        tables (flights' RMSE 6 % lower on CUDA, 3 % on the CPU; California
        and diamonds 1-2 % on the CPU with its two members there).
    n_estimators : int or "auto", default="auto"
        Ensemble members, each with its own initialisation and its own loss,
        trained jointly as one batch of batch_size * n_estimators matrices per
        step; the prediction is their mean (regression) or mean probability
        (classification). "auto": 4, and on the CPU 2 from 10,000 fit rows
        (duplicate rows merged) and 1 from 100,000 (a regressor's fit of
        several quantile levels: 1 from 10,000), where more members no
        longer paid for their share of a step (a CPU step's cost follows the
        members; a GPU's hardly does). On a GPU 8 where early stopping holds
        out 100 rows or more and the fit has fewer than 100,000 rows (on
        fewer held-out rows a fit runs its whole schedule and keeps its best
        epoch; there 8 scored worse than 4 on the selection fold, so it keeps
        4), and a regressor 2 from 100,000 rows (its early stop comes sooner
        with them: flights' GPU fit 35 % shorter at 0.5-0.9 % more RMSE; a
        classifier keeps 4: a tall classifier's log-loss rose 0.8-2.2 % with
        2); the count used is ``n_estimators_``.
        The series' model is ``feature_encoding="linear", n_estimators=1,
        shared_members=0``.
    shared_members : float in [0, 1], default=0.5
        The share of the members (rounded up; ``n_shared_members_``) whose
        matrices are scaled copies of one shared set, TabM-style: member m's
        matrix for encoded column j is r_{m,j} A_j with one learned A_j per
        column (and class) and a learned factor r_{m,j} per member and
        column, started at a random sign. They cost a step what other
        members cost (an eigenpair each) but add few parameters, and they
        differ from each other and from the own members. 0: every member
        owns its matrices (the default before 2026-12-03). A one-member fit
        (n_estimators=1, and the CPU's "auto" from 100,000 rows) has its one
        member sharing: its factors are then a scale per column, which
        shared_factor_l1 can switch off. On a GPU a step costs about what
        it costs with every member owning its matrices, but flights' fit
        takes more epochs (2.7 s against 1.8 s on an H200); on a CPU ~1.03x. Certified bounds
        read every member's r A (a monotone column's factor is |r|: the
        constraint holds).
    shared_factor_l1 : float, default=2e-3
        An L1 pull on the sharing members' factors,
        ``shared_factor_l1 * loss * sum |r_{m,j}| / 10`` added to each batch's
        loss (the batch's data loss, held constant: the pull is relative to
        how well the batch is fitted, so a clean target's small error is not
        outweighed). A member can then switch off the columns it does not
        need, as a tree never splits on a column that carries little. With
        shared_members=0.5 the defaults' suite of nine tables went from 0.964
        to 0.950 x HistGradientBoosting's error on the GPU and from 0.969 to
        0.954 on a 2-core CPU (churn's log-loss 10-12 % lower, California's
        RMSE ~3 %; benchmarks/RESULTS.md, section 12). The CPU's compiled
        steps add it. No effect without sharing members (shared_members=0);
        the model and its certified bounds are those of shared_members.
    monotonic_cst : array-like of int of shape (n_features,), dict or None, default=None
        HistGradientBoosting's convention: +1 makes the prediction
        non-decreasing in that feature, -1 non-increasing, 0 leaves it free;
        a dict maps feature names (DataFrame columns) to constraints. Each
        encoded matrix of a constrained feature is positive (negative)
        semidefinite, A = +-W W^T, and the encodings are non-decreasing in
        the feature, so the guarantee is exact (Loewner order), also after
        the internal standardisation and with clip_features. For a binary
        classifier it holds for the positive class's probability; not
        available for multiclass or on categorical features.
    structure : {"dense", "tridiagonal"}, default="dense"
        "tridiagonal": every A_i is symmetric tridiagonal (O(dim) parameters
        per matrix instead of O(dim**2)) and lambda_k comes from Sturm-count
        multisection without a Householder step, so ``dim`` can be in the
        hundreds at the cost of a dense dim-45 step. ``feature_matrices_`` is
        then in band storage (..., 2, dim): the diagonal, then the
        off-diagonal (last entry 0).
    smoothing : float or None, default=None
        None: the exact k-th eigenvalue. alpha > 0: its Moreau envelope,
        whose gradient is 1/alpha-Lipschitz (smoother training, a value
        within about alpha/2 of lambda_k); it is still 1-Lipschitz in the
        matrix, so the certified bounds hold unchanged. Needs every
        eigenpair (CuPy's batched solver on CUDA, LAPACK on the CPU), and
        its training steps are not captured in a CUDA graph."""

ATTRIBUTES_DOC = """device_, backend_, dtype_ : str
        What fit resolved "auto" to.
    column_mapper_ : skspectral._columns.ColumnMapper
        What fit learned about the input columns: which are categorical and
        their levels, the standardisation, the ranges, the medians that fill
        unexpected missing values, the encoding and the ignored columns.
    is_categorical_ : ndarray of shape (n_features_in_,) of bool, or None
        The categorical input columns (None: none); from ``column_mapper_``.
    encoding_ : skspectral.encoding.EncodingSpec
        How each input column is encoded (bins, levels, missing-value
        columns); from ``column_mapper_``.
    ignored_features_ : ndarray of int
        The input columns that hold a single value (or none) in fit and get
        no matrix.
    dim_, eigval_idx_ : int
        The matrix size and the eigenvalue index in [0, dim_).
    n_estimators_ : int
        The ensemble's members (``n_estimators``, "auto" resolved).
    n_shared_members_ : int
        How many of them (the last ones) share their matrices (``shared_members``).
    early_stopping_ : bool
        Whether this fit held out rows and stopped early.
    max_iter_ : int
        The epochs this fit may run (``max_iter``, "auto" resolved).
    x_mean_, x_scale_, x_min_, x_max_ : ndarray of shape (n_features_in_,)
        The internal standardisation of the features, and their range in fit
        (from ``column_mapper_``).
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Defined when X has string column names.
    n_iter_ : int
        Epochs run, over warm starts and partial_fit calls.
    loss_curve_ : list of float
        The training loss (with penalties, standardised) per epoch.
    best_loss_ : float or None
        The lowest training loss, without early stopping.
    validation_scores_, best_validation_score_ : list of float, float or None
        The held-out score per epoch and its best, with early_stopping.
    refit_ : bool
        Whether this fit refits on every row (``refit``, "auto" resolved,
        with early stopping).
    refit_epochs_ : int or None
        With ``refit_``: the epochs the model kept was trained for on every
        row; None otherwise.
    history_ : list of dict
        One record per epoch: losses, the training metric in the eval
        metrics' units, eval-set metrics, certified sensitivities, elapsed
        seconds (see ``skspectral._training.history``).
    mu_ : ndarray of shape ([n_estimators_,] [n_classes,] dim)
        The learned non-decreasing diagonal (standardised units); the leading
        axes are there for an ensemble (n_estimators_ > 1) and for a multiclass
        classifier.
    feature_matrices_ : ndarray of shape ([n_estimators_,] [n_classes,] n_columns, dim, dim)
        The learned symmetric matrices, one per encoded column (see
        ``encoding_.columns()``: bins, missing-value columns, levels), with the
        leading axes of ``mu_``; with structure="tridiagonal" in band storage
        (..., n_columns, 2, dim).
    feature_sensitivities_, feature_importances_ : ndarray
        Certified bounds from Weyl's inequality (see ``sensitivity_bound``)."""
